"""Batch API teachers (engine/batch_api.py) against the Batch API of `distill serve` (serve/batch_server.py)."""
import json
import logging

import httpx
import pytest

from core.errors import DistillError
from clients.api import ApiTeacher
from engine.batch_api import BatchStats, collect_batch, pending_batches, run_batch, submit_batch
from engine.jobs import GenParams, Job, request_key
from serve.server import start_server

SECRET = "sk-SECRET-batch-123"
FAST = dict(poll_s=0.02)


def _teacher(url: str, **kw) -> ApiTeacher:
    return ApiTeacher("echo-api", "openai/echo", api_base=url, api_key=kw.pop("api_key", "sk-local"), **kw)


def _jobs(store, pool: str, teacher: ApiTeacher, n: int) -> list[Job]:
    return [Job(prompt_id=r.id, rendered=teacher.render([{"role": "user", "content": r.input}]))
            for r in store.prompts(pool)[:n]]


def _batches(server) -> list[dict]:
    """The server's batches, newest first."""
    return httpx.get(f"{server.url}/batches").json()["data"]


def _sent_keys(server, batch: dict) -> set[str]:
    text = httpx.get(f"{server.url}/files/{batch['input_file_id']}/content").text
    return {json.loads(line)["custom_id"] for line in text.splitlines()}


def test_a_batch_completes_rows_land_done_and_a_rerun_submits_nothing(store, pool, capsys):
    with start_server("echo") as server:
        teacher = _teacher(server.url, price_per_mtok=(1.0, 2.0))
        jobs, params = _jobs(store, pool, teacher, 20), GenParams(max_new_tokens=32)

        def post(job, i, gen, key):
            return {"seen": True}, [dict(id="s" + key[:23], prompt_id=job.prompt_id, request_key=key,
                                         teacher=teacher.name, kind="cot", reasoning=None, answer=gen.text,
                                         parse_error=None, parent_id=None)]
        stats = BatchStats()
        out = run_batch(store, teacher, jobs, params, purpose="cot", run_id="r1", postprocess=post, stats=stats, **FAST)
        assert len(out) == 20 and stats.batches == 1 and stats.submitted == 20 and stats.done == 20
        assert server.stats["requests"] == 20 and len(_batches(server)) == 1
        row = out[request_key(teacher.name, jobs[3].rendered, params, 0)]
        assert row["status"] == "done" and row["response"].startswith("echo: ") and row["cost_usd"] > 0
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0 and row["purpose"] == "cot"
        extra = json.loads(row["extra"])
        assert extra["seen"] is True and extra["batch_id"] == _batches(server)[0]["id"]
        assert store.count("samples") == 20 and store.count("requests", "status = 'submitted'") == 0

        again = BatchStats()
        again_out = run_batch(store, teacher, jobs, params, purpose="cot", run_id="r2", stats=again, **FAST)
        assert again_out.keys() == out.keys()
        assert again.submitted == 0 and again.batches == 0
        assert server.stats["requests"] == 20 and len(_batches(server)) == 1
    assert "submitted 0 request(s) in 0 batch(es)" in capsys.readouterr().err


def test_failed_lines_land_as_errors_and_a_rerun_resubmits_exactly_those(store, pool, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    with start_server("echo", faults="500@3;429@7;malformed@11") as server:
        teacher = _teacher(server.url, api_key=SECRET)
        jobs, params = _jobs(store, pool, teacher, 12), GenParams(max_new_tokens=16)
        stats = BatchStats()
        out = run_batch(store, teacher, jobs, params, purpose="t", run_id="r1", stats=stats, **FAST)
        assert len(out) == 9 and dict(stats.errors) == {"server_error": 1, "rate_limit": 1, "malformed": 1}
        failed = store.query("SELECT key, error, extra, response FROM requests WHERE status = 'error' ORDER BY key")
        assert len(failed) == 3 and all(r["response"] is None for r in failed)
        assert {json.loads(r["extra"])["error_class"] for r in failed} == {"server_error", "rate_limit", "malformed"}
        assert any(r["error"].startswith("rate_limit: HTTP 429") for r in failed)

        again = BatchStats()
        out = run_batch(store, teacher, jobs, params, purpose="t", run_id="r2", stats=again, **FAST)
        assert len(out) == 12 and again.submitted == 3 and again.failed == 0
        assert _sent_keys(server, _batches(server)[0]) == {r["key"] for r in failed}  # exactly the failed ones
        assert server.stats["requests"] == 15
        # A wrong model name fails per line (404) too, with the key nowhere in the message.
        bad = ApiTeacher("wrong-model", "openai/no-such-model", api_base=server.url, api_key=SECRET)
        run_batch(store, bad, jobs[:2], params, purpose="t", run_id="r3", **FAST)
    assert store.count("requests", "status = 'error' AND error LIKE 'bad_request: HTTP 404%'") == 2
    for table in [r["table_name"] for r in store.query("SELECT table_name FROM information_schema.tables")]:
        assert SECRET not in str(store.query(f"SELECT * FROM {table}")), table
    captured = capfd.readouterr()
    assert SECRET not in captured.out + captured.err + caplog.text


def test_a_crash_between_submit_and_collect_collects_the_pending_batch_without_resubmitting(store, pool):
    with start_server("echo", latency_s=2.0) as server:  # in progress for 2 s: long enough under load
        teacher = _teacher(server.url)
        jobs, params = _jobs(store, pool, teacher, 8), GenParams(num_samples=2)
        batch_id = submit_batch(store, teacher, jobs, params, purpose="t", run_id="r1")
        assert store.count("requests", "status = 'submitted'") == 16
        assert pending_batches(store, teacher) == [batch_id]
        assert submit_batch(store, teacher, jobs, params, purpose="t", run_id="r1") is None  # all in flight
        # Polling gives up before the batch ends: nothing written, the rows stay submitted.
        assert collect_batch(store, teacher, batch_id, poll_s=0.01, max_wait_s=0.0) == {}
        assert store.count("requests", "status = 'submitted'") == 16

        stats = BatchStats()  # the "next run" after the crash
        out = run_batch(store, teacher, jobs, params, purpose="t", run_id="r2", stats=stats, **FAST)
        assert len(out) == 16 and stats.batches == 0 and stats.collected == 1
        assert len(_batches(server)) == 1 and server.stats["requests"] == 16
        assert pending_batches(store, teacher) == [] and store.count("requests", "status = 'done'") == 16


def test_a_batch_the_provider_lost_is_stored_as_errors_and_resubmitted(store, pool):
    with start_server("echo", latency_s=5) as first:  # stopped before it finishes
        teacher = _teacher(first.url)
        jobs = _jobs(store, pool, teacher, 4)
        submit_batch(store, teacher, jobs, GenParams(), purpose="t", run_id="r1")
    with start_server("echo") as second:  # a server that never heard of that batch
        teacher = _teacher(second.url)
        stats = BatchStats()
        out = run_batch(store, teacher, jobs, GenParams(), purpose="t", run_id="r2", stats=stats, **FAST)
        assert stats.errors == {"batch_lost": 4} and stats.submitted == 4 and len(out) == 4


def test_server_rejects_invalid_input_files_and_cancels_batches():
    with start_server("echo", latency_s=5) as server:
        def create(lines: list[str]) -> dict:
            upload = httpx.post(f"{server.url}/files", data={"purpose": "batch"},
                                files={"file": ("in.jsonl", "\n".join(lines).encode())}).json()
            return httpx.post(f"{server.url}/batches", json={"input_file_id": upload["id"], "endpoint":
                                                             "/v1/chat/completions", "completion_window": "24h"}).json()
        good = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                           "body": {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}})
        failed = create([good, good])  # duplicate custom_id
        running = create([good])
        for _ in range(100):
            if httpx.get(f"{server.url}/batches/{failed['id']}").json()["status"] != "validating":
                break
        batch = httpx.get(f"{server.url}/batches/{failed['id']}").json()
        assert batch["status"] == "failed" and batch["errors"]["data"][0]["code"] == "duplicate_custom_id"
        assert httpx.post(f"{server.url}/batches/{running['id']}/cancel").json()["status"] == "cancelling"
        assert httpx.get(f"{server.url}/batches/nope").status_code == 404


def test_only_openai_compatible_teachers_can_batch(store, pool):
    teacher = ApiTeacher("claude", "anthropic/claude-3-5-haiku-20241022", api_key="sk-x")
    with pytest.raises(DistillError, match="batch mode needs an OpenAI-compatible teacher"):
        run_batch(store, teacher, _jobs(store, pool, teacher, 1), GenParams(), purpose="t", run_id="r")
