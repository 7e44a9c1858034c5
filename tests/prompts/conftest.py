"""Fixtures for the data loaders: a tiny fake BIG-bench tarball, and the real one (fetched once)."""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

ROOT = "bigbench-1.0.0/bigbench/benchmark_tasks"

# A layout that mimics the real sdist: top-level tasks, a parent with subtasks, a task with
# only subtask files, a programmatic task, and files the loader must ignore.
MINI_TASKS = {
    "toyqa/task.json": {
        "name": "toyqa", "task_prefix": "Answer the question.", "example_input_prefix": "\nQ: ",
        "preferred_score": "multiple_choice_grade",
        "examples": [
            {"input": " Is water wet? ", "target_scores": {"Yes": 1, "No": 0},
             "target": "Yes. Water makes things wet."},
            {"input": "Is fire cold?", "target_scores": {"Yes": 0, "No": 1}, "target": "No"},
            {"input": " Is water wet? ", "target_scores": {"Yes": 1, "No": 0},
             "target": "Yes. Duplicate of the first."},
            {"input": "Pick a prime.", "target_scores": {"4": 0, "3": 1, "5": 1}, "comment": "tie"},
        ],
    },
    "gen/task.json": {
        "name": "gen",
        "examples": [
            {"input": "Capital of France?", "target": ["Paris", "paris"]},
            {"input": "2+2?", "target": "4"},
        ],
    },
    "multi/task.json": {"name": "multi", "task_prefix": "Parent prefix."},
    "multi/a/task.json": {
        "name": "a",
        "examples": [{"input": "a1", "target_scores": {"x": 1, "y": 0}},
                     {"input": "shared", "target_scores": {"x": 0, "y": 1}}],
    },
    "multi/b/task.json": {
        "name": "b", "task_prefix": "Child prefix.",
        "examples": [{"input": "shared", "target_scores": {"x": 0, "y": 1}},
                     {"input": "b1", "target_scores": {"x": 1, "y": 0}}],
    },
    "onlysub/x/task.json": {"name": "x", "examples": [{"input": "q", "target": "r"}]},
    "prog/task.py": "# programmatic task\n",
    "prog/README.md": "readme\n",
    "toyqa/README.md": "readme\n",
}


def build_mini_tarball(dest_dir: Path) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    tar_path = dest_dir / "bigbench-1.0.0.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tf:
        files = {f"{ROOT}/{k}": v for k, v in MINI_TASKS.items()}
        files["bigbench-1.0.0/setup.py"] = "# not a task\n"
        for name, content in files.items():
            data = (content if isinstance(content, str) else json.dumps(content)).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return tar_path


@pytest.fixture
def mini_cache(tmp_path, monkeypatch) -> Path:
    """DISTILL_CACHE pointing at a temp dir holding the fake tarball; returns the bigbench dir."""
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    build_mini_tarball(tmp_path / "bigbench")
    return tmp_path / "bigbench"


@pytest.fixture(scope="session")
def real_bigbench(tmp_path_factory) -> Path:
    """The real BIG-bench cache dir, fetched (20 s) and extracted (~10 s) once per session.

    Uses $DISTILL_CACHE/bigbench when DISTILL_CACHE is set, so a developer's cache (or a
    CI cache) is reused across runs; otherwise ~/.cache/distill, as the CLI does.
    """
    from prompts.bigbench import bigbench_task_names, fetch_bigbench

    # The same machine-wide cache the CLI uses, so a machine downloads the sdist once.
    root = os.environ.get("DISTILL_CACHE") or str(Path.home() / ".cache" / "distill")
    cache = Path(root) / "bigbench"
    fetch_bigbench(cache, quiet=True)
    bigbench_task_names(cache)  # extracts every task.json once, before any test times a load
    return cache
