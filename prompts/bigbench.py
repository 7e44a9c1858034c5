"""BIG-bench tasks, read offline from a copy of the bigbench 1.0.0 sdist you bring yourself.

BIG-bench is optional: the package index no longer serves bigbench==1.0.0, so nothing
downloads it. The default tasks come from `distill data list` (prompts.catalog). If you
have the 358 MB sdist tarball, or its `benchmark_tasks/` folder extracted, put it under
`cache_dir()/"bigbench"` (or the `cache` argument) and every `bigbench:<task>` loads:

    bigbench-1.0.0.tar.gz           the sdist; the first load extracts every task.json in
                                    one streaming pass (~10 s) and writes an index:
    index.json                      {"tasks": {task: [subtasks]}, "programmatic": [...]}
    tasks/<task>.json               top-level task.json
    tasks/<task>/<subtask>.json     subtask task.json
  or
    benchmark_tasks/<task>/task.json, benchmark_tasks/<task>/<subtask>/task.json
                                    an extracted folder, read in place (no copy, no index file)
"""
from __future__ import annotations

import difflib
import json
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

from core.errors import DistillError
from core.paths import cache_dir
from prompts.rows import PromptRow, split_for, stable_id

VERSION = "1.0.0"
TARBALL = f"bigbench-{VERSION}.tar.gz"
FOLDER = "benchmark_tasks"
_TASKS_ROOT = f"bigbench-{VERSION}/bigbench/benchmark_tasks/"


def _dir(cache: Path | None) -> Path:
    return Path(cache) if cache is not None else cache_dir() / "bigbench"


def _missing(d: Path) -> DistillError:
    return DistillError(
        f"BIG-bench is not available: the package index no longer serves bigbench=={VERSION}; "
        f"put {TARBALL} or an extracted {FOLDER}/ folder in {d}, or use a task from `distill data list`"
    )


def bigbench_available(cache: Path | None = None) -> bool:
    """Whether a BIG-bench copy (tarball, its extraction, or a benchmark_tasks/ folder) is cached."""
    d = _dir(cache)
    return (d / TARBALL).exists() or (d / "index.json").exists() or (d / FOLDER).is_dir()


def fetch_bigbench(cache: Path | None = None, quiet: bool = False) -> Path:
    """The cached BIG-bench copy (tarball or benchmark_tasks/ folder); nothing is downloaded.

    Kept under its old name for callers that check BIG-bench first; `quiet` is ignored.
    """
    d = _dir(cache)
    for path in (d / TARBALL, d / FOLDER):
        if path.exists():
            return path
    if (d / "index.json").exists() and (d / "tasks").is_dir():
        return d / "tasks"  # extracted earlier; the tarball itself was removed
    raise _missing(d)


def _safe(parts: list[str]) -> bool:
    return all(p and p not in (".", "..") for p in parts)


def _extract_all(d: Path) -> dict:
    """One streaming pass over the tarball: copy out every task.json and build the index."""
    tar = d / TARBALL
    if not tar.exists():
        raise _missing(d)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="tasks-", dir=d))  # renamed into place when complete
    tasks: dict[str, list[str]] = {}
    has_py: set[str] = set()
    try:
        with tarfile.open(tar, "r|gz") as tf:  # stream mode: no seeking back
            for m in tf:
                if not m.isfile() or not m.name.startswith(_TASKS_ROOT):
                    continue
                parts = m.name[len(_TASKS_ROOT):].split("/")
                if not _safe(parts):
                    continue
                if parts[-1] == "task.py" and len(parts) == 2:
                    has_py.add(parts[0])
                if parts[-1] != "task.json" or len(parts) not in (2, 3):
                    continue
                subs = tasks.setdefault(parts[0], [])
                if len(parts) == 2:
                    dest = tmp / f"{parts[0]}.json"
                else:
                    subs.append(parts[1])
                    dest = tmp / parts[0] / f"{parts[1]}.json"
                dest.parent.mkdir(parents=True, exist_ok=True)
                with tf.extractfile(m) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
    except (tarfile.TarError, OSError, EOFError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DistillError(f"cannot read {tar} ({e}): delete it and put a complete copy there") from e
    final = d / "tasks"
    if final.exists():  # left by a run that died before writing index.json
        shutil.rmtree(final)
    os.replace(tmp, final)
    index = {
        "version": VERSION,
        "tasks": {t: sorted(s) for t, s in sorted(tasks.items())},
        "programmatic": sorted(has_py - tasks.keys()),
        "extract_seconds": round(time.perf_counter() - start, 1),
    }
    part = d / "index.json.part"
    part.write_text(json.dumps(index, indent=1))
    os.replace(part, d / "index.json")  # written last: its presence means tasks/ is complete
    return index


def _folder_index(root: Path) -> dict:
    """Index of an extracted benchmark_tasks/ folder, built by listing it (fast, nothing copied)."""
    tasks: dict[str, list[str]] = {}
    programmatic = []
    for task in sorted(p for p in root.iterdir() if p.is_dir()):
        subs = sorted(p.name for p in task.iterdir() if (p / "task.json").is_file())
        if (task / "task.json").is_file() or subs:
            tasks[task.name] = subs
        elif (task / "task.py").is_file():
            programmatic.append(task.name)
    return {"version": VERSION, "tasks": tasks, "programmatic": programmatic, "folder": str(root)}


def _index(cache: Path | None) -> dict:
    d = _dir(cache)
    idx = d / "index.json"
    if idx.exists() and (d / "tasks").is_dir():
        return json.loads(idx.read_text())
    if (d / TARBALL).exists():
        return _extract_all(d)
    if (d / FOLDER).is_dir():
        return _folder_index(d / FOLDER)
    raise _missing(d)


def _task_file(d: Path, index: dict, task: str, sub: str | None) -> Path:
    if "folder" in index:  # an extracted benchmark_tasks/ folder, read in place
        root = Path(index["folder"]) / task
        return root / sub / "task.json" if sub else root / "task.json"
    return d / "tasks" / task / f"{sub}.json" if sub else d / "tasks" / f"{task}.json"


def bigbench_task_names(cache: Path | None = None, include_subtasks: bool = True) -> list[str]:
    """Loadable task names: `task` (subtasks merged) and, if asked, each `task:subtask`."""
    names = []
    for task, subs in _index(cache)["tasks"].items():
        names.append(task)
        if include_subtasks:
            names.extend(f"{task}:{s}" for s in subs)
    return names


def _unknown(name: str, index: dict) -> DistillError:
    close = difflib.get_close_matches(name, list(index["tasks"]), n=1)
    example = close[0] if close else "strategyqa"
    return DistillError(
        f"unknown BIG-bench task '{name}': pick one of `distill data list bigbench` (e.g. {example})"
    )


def _prefix(spec: dict, parent: dict) -> str | None:
    # The task-level preamble and the per-example input prefix together are what
    # BIG-bench puts before each input (elementary_math_qa keeps its question there).
    parts = []
    for key in ("task_prefix", "example_input_prefix"):
        value = spec.get(key, parent.get(key))
        if isinstance(value, str) and value.strip():
            parts.append(value.strip())
    return "\n".join(parts) or None


def _row(ex: dict, task: str, subtask: str | None, prefix: str | None, spec: dict,
         calibration: float, test: float) -> PromptRow:
    text = str(ex.get("input", "")).strip()
    scores = ex.get("target_scores")
    target = ex.get("target")
    meta: dict = {"task_prefix": prefix, "subtask": subtask}
    if spec.get("preferred_score"):
        meta["preferred_score"] = spec["preferred_score"]
    choices = None
    rationale = None
    if scores:
        choices = list(scores)
        best = max(scores.values())
        golds = [c for c in choices if scores[c] == best]
        gold = golds[0]
        # A free-text target next to target_scores is a human explanation
        # (only strategyqa: "Yes. <why>"); keep the why without the answer.
        if isinstance(target, str) and target.strip() != gold:
            why = target.removeprefix(gold)
            rationale = why.lstrip(" .:,-\n").strip() or None
    else:
        golds = target if isinstance(target, list) else [target] if target is not None else [""]
        gold = str(golds[0])
    if len(golds) > 1:
        meta["golds"] = golds  # ties in target_scores, or several acceptable targets
    extra = {k: v for k, v in ex.items() if k not in ("input", "target", "target_scores")}
    if extra:
        meta["extra"] = extra  # e.g. "comment", per-example "meta"
    key = json.dumps(scores if scores else target, sort_keys=True, ensure_ascii=False)
    # The id names the parent task, not the subtask, so a row keeps its id (and split)
    # whether it was loaded as `task` or `task:subtask`.
    rid = stable_id("bigbench", task, text, key)
    return PromptRow(id=rid, source="bigbench", task=task, input=text, gold=gold,
                     split=split_for(rid, calibration, test), choices=choices,
                     rationale=rationale, meta=meta)


def load_bigbench(task: str, cache: Path | None = None, calibration: float = 0.2,
                  test: float = 0.2) -> list[PromptRow]:
    """Rows of one BIG-bench JSON task: `task` (all subtasks merged) or `task:subtask`."""
    index = _index(cache)
    name, _, sub = task.partition(":")
    if name in index["programmatic"]:
        raise DistillError(
            f"BIG-bench task '{name}' is programmatic (task.py, no task.json) and not "
            f"supported: pick a JSON task from `distill data list bigbench`"
        )
    if name not in index["tasks"] or (sub and sub not in index["tasks"][name]):
        raise _unknown(task, index)
    d = _dir(cache)
    top = _task_file(d, index, name, None)
    parent = json.loads(top.read_bytes()) if top.exists() else {}
    files = [(None, parent)] if not sub else []
    for s in [sub] if sub else index["tasks"][name]:
        files.append((s, json.loads(_task_file(d, index, name, s).read_bytes())))
    rows: list[PromptRow] = []
    seen: set[str] = set()
    for subtask, spec in files:
        prefix = _prefix(spec, parent)
        for ex in spec.get("examples", []):
            row = _row(ex, name, subtask, prefix, spec, calibration, test)
            if row.id not in seen:  # identical examples (or repeats across subtasks): keep first
                seen.add(row.id)
                rows.append(row)
    return rows
