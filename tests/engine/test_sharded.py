"""Sharded synthesis (engine/sharded.py): N workers on shard stores give the single-process store, also
when a worker is killed mid-shard or the coordinator dies mid-ingest; no finished request is paid twice."""
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from clients.teachers import get_teacher
from core.errors import DistillError
from engine.sharded import ingest, shard_index
from serve.server import ServeGuard, start_server
from store.store import Store
from synth.cot import CotParams, generate_traces

PARAMS = CotParams(num_samples=2, max_new_tokens=8)


def _store(path, rows) -> Store:
    store = Store(path)
    store.add_prompts(rows, "yesno")
    return store


def _contents(store: Store) -> tuple:
    """What must match between runs: request keys with status and response, samples with their answers."""
    requests = store.query("SELECT key, status, response FROM requests ORDER BY key")
    samples = store.query("SELECT id, request_key, answer, parse_error FROM samples ORDER BY id")
    return [tuple(r.values()) for r in requests], [tuple(s.values()) for s in samples]


def _synth(store: Store, url: str, **options) -> dict:
    teacher = get_teacher("api:openai/echo", api_base=url, api_key="sk-local", backoff_base_s=0.01, **options)
    return generate_traces(store, teacher, "yesno", PARAMS, run_id="r")


@pytest.fixture
def single(tmp_path, rows):
    with start_server("echo") as server, _store(tmp_path / "single.duckdb", rows) as store:
        _synth(store, server.url)
        return _contents(store)


def test_shard_index_is_stable_and_spreads():
    ids = [f"p{i}" for i in range(1000)]
    counts = [sum(shard_index(i, 4) == s for i in ids) for s in range(4)]
    assert shard_index("p7", 4) == shard_index("p7", 4) and min(counts) > 200


def test_two_local_workers_give_the_single_process_store(tmp_path, rows, single):
    with start_server("echo") as server, _store(tmp_path / "s.duckdb", rows) as store:
        _synth(store, server.url, workers=2, executor="local")
        assert _contents(store) == single
        assert server.stats["requests"] == len(single[0]) and server.stats["repeated"] == 0
        _synth(store, server.url, workers=2, executor="local")
        assert server.stats["requests"] == len(single[0])  # a re-run pays for nothing
    assert not (tmp_path / "s.duckdb.shards").exists() or not any((tmp_path / "s.duckdb.shards").iterdir())


def test_a_key_passed_as_a_value_reaches_local_workers_and_no_file(tmp_path, rows, single):
    # The server refuses calls without the key: the workers must have got it, through their environment.
    with start_server("echo", guard=ServeGuard(api_key="sk-passed")) as server, \
            _store(tmp_path / "s.duckdb", rows) as store:
        teacher = get_teacher("api:openai/echo", api_base=server.url, api_key="sk-passed", workers=2,
                              executor="local", backoff_base_s=0.01)
        generate_traces(store, teacher, "yesno", PARAMS, run_id="r")
        assert _contents(store) == single and "DISTILL_SHARD_API_KEY" not in os.environ
    assert not any("sk-passed" in f.read_text(errors="ignore") for f in tmp_path.rglob("*") if f.is_file())


@pytest.mark.parametrize("executor", ["ray", "slurm"])
def test_a_key_passed_as_a_value_is_refused_for_workers_elsewhere(tmp_path, rows, executor):
    with _store(tmp_path / "s.duckdb", rows) as store:
        teacher = get_teacher("api:openai/echo", api_base="http://127.0.0.1:9", api_key="sk-passed", workers=2,
                              executor=executor)
        before = store.count("requests")
        with pytest.raises(DistillError, match=f"--executor {executor} workers read the API key from an"):
            generate_traces(store, teacher, "yesno", PARAMS, run_id="r")
        assert store.count("requests") == before
    assert not (tmp_path / "s.duckdb.shards").exists()


def _kill_a_worker_after_a_commit(server, n: int, shards, match) -> threading.Thread:
    """Kill -9 one worker process once the server has answered `n` requests, right after that worker's
    shard store committed (its write-ahead log grew): a kill then loses only what was in flight. The
    victim and its shard file are found first, so nothing slow sits between the commit and the kill."""
    def victim_and_wal():
        for proc in psutil.Process().children(recursive=True):
            try:
                if not match(" ".join(proc.cmdline())):
                    continue
                stores = [f.path for f in proc.open_files() if f.path.endswith(".duckdb")]
            except psutil.Error:
                continue
            if stores:
                return proc.pid, Path(stores[0] + ".wal")
        return None, None

    def size(path):
        return path.stat().st_size if path.exists() else -1

    def killer():
        while server.stats["requests"] < n:
            time.sleep(0.005)
        pid, wal = victim_and_wal()
        while pid is None:
            time.sleep(0.005)
            pid, wal = victim_and_wal()
        before = size(wal)
        while size(wal) == before:
            time.sleep(0.0005)
        # The log grows while the commit is written: kill once it has stopped growing for 10 ms (a kill
        # in the middle of the write would lose that whole transaction, which is what kill -9 can do,
        # but not what this test measures).
        grown, steady_since = size(wal), time.monotonic()
        while time.monotonic() - steady_since < 0.01:
            time.sleep(0.0005)
            if size(wal) != grown:
                grown, steady_since = size(wal), time.monotonic()
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
    killed: list[int] = []
    thread = threading.Thread(target=killer, daemon=True)
    thread.killed = killed
    thread.start()
    return thread


CONCURRENCY = 4  # per job: 2 slots per shard


def test_a_local_worker_killed_mid_shard_loses_and_repeats_nothing(tmp_path, rows, single):
    with start_server("echo", latency_s=0.05) as server, _store(tmp_path / "s.duckdb", rows) as store:
        killer = _kill_a_worker_after_a_commit(server, 12, tmp_path / "s.duckdb.shards", lambda c: "spawn_main" in c)
        _synth(store, server.url, workers=2, executor="local", max_concurrency=CONCURRENCY)
        killer.join(1)
        assert killer.killed and _contents(store) == single
        # Paid twice at most: the killed worker's requests in flight (2 slots), and any answered in the
        # moment between its commit and the kill (a few ms).
        assert server.stats["repeated"] <= 6


def test_a_coordinator_killed_mid_ingest_ingests_the_rest_and_nothing_twice(tmp_path, rows, single, monkeypatch):
    import engine.sharded as sharded

    calls = {"n": 0}

    def dies_after_one(*args, **kwargs):
        if calls["n"] == 1:
            raise KeyboardInterrupt  # stands in for kill -9 between two shards' ingests
        calls["n"] += 1
        return ingest(*args, **kwargs)

    with start_server("echo") as server, _store(tmp_path / "s.duckdb", rows) as store:
        monkeypatch.setattr(sharded, "ingest", dies_after_one)
        with pytest.raises(KeyboardInterrupt):
            _synth(store, server.url, workers=2, executor="local")
        half = store.count("requests")
        assert 0 < half < len(single[0])
        monkeypatch.setattr(sharded, "ingest", ingest)
        _synth(store, server.url, workers=2, executor="local")
        assert _contents(store) == single and server.stats["requests"] == len(single[0])


def test_sharding_a_local_teacher_is_refused():
    with pytest.raises(DistillError, match="--workers / --executor shard API teachers only"):
        get_teacher("tiny-random", workers=2)


@pytest.mark.slow
def test_distill_synth_on_a_local_ray_cluster_equals_one_process_also_after_a_worker_is_killed(tmp_path, rows):
    """`distill synth --workers 2 --executor ray` as a user runs it, against one process on the same data."""
    ray = pytest.importorskip("ray")
    from distill.cli import main

    stores = {}
    try:
        for name, extra in (("single", []), ("ray", ["--workers", "2", "--executor", "ray"])):
            with start_server("echo", latency_s=0.05) as server:
                path = tmp_path / f"{name}.duckdb"
                with _store(path, rows):
                    pass
                killer = _kill_a_worker_after_a_commit(server, 12, tmp_path / "ray.duckdb.shards",
                                                       lambda c: "ray::run_shard" in c) if extra else None
                assert main(["synth", "--store", str(path), "--pool", "yesno", "--teacher", "api:openai/echo",
                             "--api-base", server.url, "--samples", "2", "--max-new-tokens", "8",
                             "--max-concurrency", str(CONCURRENCY), *extra]) == 0
                if killer:
                    killer.join(1)
                    assert killer.killed and server.stats["repeated"] <= 6
            with Store(path, read_only=True) as store:
                stores[name] = _contents(store)
    finally:
        ray.shutdown()
    assert stores["ray"] == stores["single"] and len(stores["single"][1]) > 0


def test_a_slurm_array_runs_the_shards_and_a_rerun_ingests_them(tmp_path, rows, single, capfd):
    """No Slurm here: each array task of the generated sbatch script is run as Slurm would run it
    (bash, SLURM_ARRAY_TASK_ID set), then the same command again ingests."""
    import re
    import subprocess

    from distill.cli import main

    with start_server("echo") as server:
        path = tmp_path / "s.duckdb"
        with _store(path, rows):
            pass
        args = ["synth", "--store", str(path), "--pool", "yesno", "--teacher", "api:openai/echo", "--api-base",
                server.url, "--samples", "2", "--max-new-tokens", "8", "--examples", "0", "--workers", "2",
                "--executor", "slurm"]
        assert main(args) == 3
        err = capfd.readouterr().err.strip().splitlines()[-1]
        script = re.search(r"sbatch (\S+)`", err).group(1)
        assert "2 of 2 shard(s) have not run" in err and server.stats["requests"] == 0
        for task in range(2):
            subprocess.run(["bash", script], env=dict(os.environ, SLURM_ARRAY_TASK_ID=str(task)), check=True,
                           capture_output=True, timeout=300)
        assert main(args) == 0 and server.stats["repeated"] == 0
    with Store(path, read_only=True) as store:
        assert store.count("samples") == store.count("requests", "status = 'done'") == len(single[1])
