"""Fixtures for the data loaders: a tiny fake BIG-bench tarball, and the real one if you have it."""
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


def build_mini_folder(dest_dir: Path) -> Path:
    """The same tasks as an extracted `benchmark_tasks/` folder (how a user may bring BIG-bench)."""
    root = dest_dir / "benchmark_tasks"
    for rel, content in MINI_TASKS.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return root


@pytest.fixture
def mini_folder_cache(tmp_path, monkeypatch) -> Path:
    """DISTILL_CACHE pointing at a temp dir holding an extracted benchmark_tasks/ folder."""
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    build_mini_folder(tmp_path / "bigbench")
    return tmp_path / "bigbench"


@pytest.fixture
def make_mini_tarball():
    """build_mini_tarball, for tests that need a second copy next to a fixture's cache."""
    return build_mini_tarball


@pytest.fixture(scope="session")
def real_bigbench() -> Path:
    """The real BIG-bench cache dir, only if a copy is already there (nothing is downloaded).

    The package index no longer serves bigbench==1.0.0, so these tests run only on machines
    where someone put the tarball (or benchmark_tasks/) in $DISTILL_CACHE/bigbench.
    """
    from prompts.bigbench import bigbench_available, bigbench_task_names

    root = os.environ.get("DISTILL_CACHE") or str(Path.home() / ".cache" / "distill")
    cache = Path(root) / "bigbench"
    if not bigbench_available(cache):
        pytest.skip(f"no BIG-bench copy in {cache} (the package index no longer serves "
                    f"bigbench==1.0.0; put bigbench-1.0.0.tar.gz there to run this test)")
    bigbench_task_names(cache)  # extracts every task.json once, before any test times a load
    return cache
