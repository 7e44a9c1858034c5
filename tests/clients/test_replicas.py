"""A teacher over several replicas: calls spread over them, a replica that dies is taken out, every
request still finishes (real HTTP to two loopback servers)."""
import asyncio

import pytest

from clients.api import ApiTeacher
from clients.replicas import COOLDOWN_S, Replicas
from engine.api_engine import run_api_requests
from engine.jobs import GenParams, Job
from serve.server import start_server


def _jobs(teacher, n):
    return [Job(prompt_id=f"p{i}", rendered=teacher.render([{"role": "user", "content": f"question {i}"}]))
            for i in range(n)]


def test_calls_spread_over_replicas_and_a_dead_one_is_taken_out(store):
    with start_server("echo", latency_s=0.02) as a, start_server("echo", latency_s=0.02) as b:
        teacher = ApiTeacher("echo-api", "openai/echo", api_base=f"{a.url},{b.url}")
        out = run_api_requests(store, teacher, _jobs(teacher, 40), GenParams(), purpose="t", run_id="r",
                               max_concurrency=8, backoff_base_s=0.01)
        assert len(out) == 40 and a.stats["requests"] >= 10 and b.stats["requests"] >= 10
        dead = b.url
    # b is gone (its port closed): the next run's calls to it fail in transport, it is taken out, and
    # the engine's retries land on a.
    with start_server("echo", latency_s=0.02) as a2:
        teacher = ApiTeacher("echo-api", "openai/echo", api_base=f"{a2.url},{dead}")
        jobs = [Job(prompt_id=f"q{i}", rendered=teacher.render([{"role": "user", "content": f"other {i}"}]))
                for i in range(40)]
        out = run_api_requests(store, teacher, jobs, GenParams(), purpose="t", run_id="r2", max_concurrency=8,
                               backoff_base_s=0.01)
        assert len(out) == 40 and a2.stats["requests"] == 40
        health = teacher.replicas.stats()
        assert health[dead]["healthy"] is False and health[dead]["calls"] < 20


def test_max_per_replica_caps_each_server_in_a_cli_run(tmp_path, rows):
    # `distill synth --api-base A,B --max-per-replica 1 --max-concurrency 8`: never 2 calls at once on a server.
    from distill.cli import main
    from store.store import Store

    with Store(tmp_path / "s.duckdb") as store:
        store.add_prompts(rows, "yesno")
    with start_server("echo", latency_s=0.05) as a, start_server("echo", latency_s=0.05) as b:
        assert main(["synth", "--store", str(tmp_path / "s.duckdb"), "--pool", "yesno", "--teacher",
                     "api:openai/echo", "--api-base", f"{a.url},{b.url}", "--max-per-replica", "1",
                     "--max-concurrency", "8", "--samples", "1", "--examples", "0"]) == 0
        assert a.stats["peak_in_flight"] == b.stats["peak_in_flight"] == 1
        assert a.stats["requests"] + b.stats["requests"] >= 8


def test_per_replica_cap_and_cooldown_probe():
    async def scenario():
        replicas = Replicas(["u1", "u2"], max_per_replica=1)
        async with replicas.call() as first, replicas.call() as second:
            assert {first.url, second.url} == {"u1", "u2"}  # the cap sends the second call elsewhere
        r = replicas.replicas[0]
        for _ in range(3):
            replicas.done(r, "connection")
        assert not r.healthy(0) or r.out_until > 0
        async with replicas.call() as picked:
            assert picked.url == "u2"  # u1 is out for its cooldown
        replicas.done(r, None)  # a probe that succeeded brings it back at once
        assert r.out_until == 0.0 and r.cooldown_s == COOLDOWN_S
    asyncio.run(scenario())


def test_batch_mode_refuses_replicas():
    from core.errors import DistillError
    from engine.batch_api import _client

    with pytest.raises(DistillError, match="--batch takes one --api-base"):
        _client(ApiTeacher("t", "openai/echo", api_base="http://127.0.0.1:1/v1,http://127.0.0.1:2/v1"))
