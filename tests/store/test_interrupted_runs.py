"""A run ends done, failed or interrupted: Ctrl-C marks it at once, kill -9 when the next process
opens the store; a run whose process still lives, or lives on another host, is left running."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from core.errors import DistillError
from store.runs import recorded_run
from store.store import Store

ROOT = Path(__file__).resolve().parents[2]


def _status(path: Path) -> dict[str, str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return dict(con.execute("SELECT stage, status FROM runs").fetchall())
    finally:
        con.close()


def test_a_killed_run_is_interrupted_when_the_store_is_next_opened(tmp_path):
    path = tmp_path / "s.duckdb"
    code = ("import os, signal\nfrom store.store import Store\ns = Store(%r)\ns.start_run('synth', {})\n"
            "s.con.execute('CHECKPOINT')\nos.kill(os.getpid(), signal.SIGKILL)" % str(path))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL
    assert _status(path) == {"synth": "running"}  # what kill -9 leaves behind
    with Store(path) as store:
        assert [r["status"] for r in store.runs()] == ["interrupted"]
        assert store.runs()[0]["finished_at"] is not None


def test_a_live_or_foreign_run_stays_running(tmp_path):
    path = tmp_path / "s.duckdb"
    with Store(path) as store:
        mine = store.start_run("mine", {})
        store.con.execute("INSERT INTO runs (id, stage, owner) VALUES ('far', 'far', 'another-host:1:1')")
    with Store(path) as store:
        assert {r["id"]: r["status"] for r in store.runs()} == {mine: "running", "far": "running"}


def test_ctrl_c_marks_the_run_interrupted_and_an_error_failed(store):
    with pytest.raises(KeyboardInterrupt), recorded_run(store, "curate", {}):
        raise KeyboardInterrupt
    with pytest.raises(ValueError), recorded_run(store, "train", {}):
        raise ValueError("boom")
    assert {r["stage"]: r["status"] for r in store.runs()} == {"curate": "interrupted", "train": "failed"}


def test_a_store_from_a_newer_distill_is_refused_unchanged(tmp_path):
    path = tmp_path / "s.duckdb"
    with Store(path) as store:
        store.con.execute("INSERT INTO schema_migrations (version, name) VALUES (99, 'from the future')")
    before = path.read_bytes()
    with pytest.raises(DistillError, match="schema version 99, newer than this distill"):
        Store(path)
    assert path.read_bytes() == before
    os.remove(path)


def test_read_only_commands_work_while_a_writer_runs(tmp_path):
    """DuckDB lets one process write a file and no other open it: a reader gets a snapshot, a second
    writer one line naming the writer's PID and what to do."""
    path = tmp_path / "s.duckdb"
    with Store(path) as store:
        store.start_run("earlier", {})
    code = ("import sys, time\nfrom store.store import Store\ns = Store(%r)\ns.start_run('synth', {})\n"
            "print('ready', flush=True)\ntime.sleep(60)" % str(path))
    writer = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        with Store(path, read_only=True) as reader:
            snapshot = reader.snapshot
            assert snapshot and sorted(r["stage"] for r in reader.runs()) == ["earlier", "synth"]
        assert not Path(snapshot).exists()  # the copy goes when the reader closes
        with pytest.raises(DistillError, match=rf"being written by another distill process \(PID {writer.pid}\)"):
            Store(path)
        done = subprocess.run([sys.executable, "-m", "distill.cli", "report", "--store", str(path)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "synth" in done.stdout, done.stderr
    finally:
        writer.kill(), writer.wait()

