"""The async API engine against a real OpenAI-compatible server on loopback (serve/server.py)."""
import asyncio
import logging
import time

import pytest

from core.errors import DistillError
from clients.api_errors import ApiError
from clients.api import ApiTeacher
from engine.api_engine import RunStats, run_api_requests
from engine.jobs import GenParams, Job, request_key
from clients.types import Generation
from serve.server import start_server

SECRET = "sk-SECRET-123"
FAST = dict(backoff_base_s=0.01, backoff_cap_s=0.05)  # retries in milliseconds, except Retry-After


def _teacher(url: str, **kw) -> ApiTeacher:
    return ApiTeacher("echo-api", "openai/echo", api_base=url, api_key=kw.pop("api_key", "sk-local"), **kw)


def _jobs(store, pool: str, teacher: ApiTeacher, n: int) -> list[Job]:
    return [Job(prompt_id=r.id, rendered=teacher.render([{"role": "user", "content": r.input}]))
            for r in store.prompts(pool)[:n]]


def test_results_stored_rerun_calls_nothing_and_a_changed_param_reruns_only_its_requests(store, pool, capsys):
    with start_server("echo") as server:
        teacher = _teacher(server.url, price_per_mtok=(1.0, 2.0))
        jobs = _jobs(store, pool, teacher, 10)
        params = GenParams(max_new_tokens=32, num_samples=2)

        def post(job, i, gen, key):
            return {"seen": True}, [dict(id="s" + key[:23], prompt_id=job.prompt_id, request_key=key,
                                         teacher=teacher.name, kind="cot", reasoning=None, answer=gen.text,
                                         parse_error=None, parent_id=None)]
        out = run_api_requests(store, teacher, jobs, params, purpose="cot", run_id="r1", postprocess=post)
        assert len(out) == 20 and server.stats["requests"] == 20
        row = out[request_key(teacher.name, jobs[0].rendered, params, 1)]
        assert row["status"] == "done" and row["response"].startswith("echo: ") and row["cost_usd"] > 0
        assert row["model"] == "echo-api" and row["sample_index"] == 1 and '"seen": true' in row["extra"]
        assert store.count("samples") == 20
        spent = sum(r["cost_usd"] for r in out.values())

        again = run_api_requests(store, teacher, jobs, params, purpose="cot", run_id="r2")
        assert server.stats["requests"] == 20  # every request came from the cache
        assert again.keys() == out.keys()
        assert f"20 done, 0 to go, ${spent:.4f} spent so far" in capsys.readouterr().err

        run_api_requests(store, teacher, jobs[:3], GenParams(max_new_tokens=16, num_samples=2),
                         purpose="cot", run_id="r3")
        assert server.stats["requests"] == 26  # only the requests the new parameter changes
        assert store.count("requests") == 26


def test_faults_are_retried_and_a_truncated_200_is_stored_with_its_text(store, pool):
    faults = "429@1;500@2;malformed@3;drop@4;timeout@5;truncate@6"
    with start_server("echo", faults=faults) as server:
        teacher = _teacher(server.url, timeout_s=1.0)  # the injected hang ends at 1 s
        jobs = _jobs(store, pool, teacher, 6)
        stats = RunStats()
        began = time.perf_counter()
        out = run_api_requests(store, teacher, jobs, GenParams(max_new_tokens=32), purpose="t", run_id="r",
                               max_concurrency=1, stats=stats, **FAST)
        elapsed = time.perf_counter() - began
    assert len(out) == 6 and store.count("requests", "status = 'done'") == 6
    assert dict(stats.errors) == {"rate_limit": 1, "server_error": 1, "malformed": 1, "connection": 1, "timeout": 1}
    assert elapsed >= 1.0  # the 429's Retry-After: 1 was honoured, not the 10 ms backoff
    assert server.stats["requests"] == 11
    cut = [r for r in out.values() if r["finish_reason"] == "length"]
    assert len(cut) == 1 and cut[0]["response"].startswith("ech")  # half the echo text, kept as done


def test_exhausted_retries_are_stored_as_errors_and_retried_by_the_next_run(store, pool):
    with start_server("echo", faults="500@1,2,3") as server:
        teacher = _teacher(server.url)
        jobs = _jobs(store, pool, teacher, 3)
        out = run_api_requests(store, teacher, jobs, GenParams(), purpose="t", run_id="r1",
                               max_concurrency=1, max_retries=2, **FAST)
        assert len(out) == 2
        failed = store.query("SELECT * FROM requests WHERE status = 'error'")
        assert len(failed) == 1 and failed[0]["error"].startswith("server_error: ")
        assert '"error_class": "server_error"' in failed[0]["extra"] and failed[0]["response"] is None
        out = run_api_requests(store, teacher, jobs, GenParams(), purpose="t", run_id="r2", **FAST)
        assert len(out) == 3 and server.stats["requests"] == 6  # 3 failed tries + 2 + the one retried
    assert store.count("requests", "status = 'error'") == 0


def test_concurrency_is_cut_on_429_and_everything_still_finishes(store, pool):
    with start_server("echo", faults="429:0.25", latency_s=0.02, seed=3) as server:
        teacher = _teacher(server.url)
        stats = RunStats()
        out = run_api_requests(store, teacher, _jobs(store, pool, teacher, 40), GenParams(), purpose="t",
                               run_id="r", max_concurrency=16, stats=stats, **FAST)
    assert len(out) == 40 and stats.errors["rate_limit"] > 0
    assert stats.lowest_concurrency < 16


def test_circuit_breaker_stops_a_failing_teacher_with_a_clear_error(store, pool):
    with start_server("echo", faults="500:0.9", seed=1) as server:
        teacher = _teacher(server.url)
        with pytest.raises(DistillError, match=r"teacher echo-api stopped: \d+ of the last \d+ calls failed "
                                               r"\(server_error \d+"):
            run_api_requests(store, teacher, _jobs(store, pool, teacher, 40), GenParams(num_samples=3),
                             purpose="t", run_id="r", max_concurrency=4, max_retries=1, **FAST)
        assert server.stats["requests"] < 60  # stopped early, not after all 120 requests x 2 tries
    # Every scheduled request has a row, done or with its error (not_started after the breaker opened).
    assert store.count("requests") == 120
    assert store.count("requests", "error LIKE 'not_started: the circuit breaker opened%'") > 0


@pytest.mark.parametrize("faults", ["drop:0.5", "malformed:0.5", "500:0.5"])
def test_half_transient_faults_finish_in_one_run(store, pool, faults):
    """Retries absorb transient faults; only failures that outlive them feed the breaker."""
    with start_server("echo", faults=faults, seed=3) as server:
        teacher = _teacher(server.url, timeout_s=2)
        out = run_api_requests(store, teacher, _jobs(store, pool, teacher, 40), GenParams(num_samples=2),
                               purpose="t", run_id="r", max_concurrency=8, max_retries=20, **FAST)  # 2^-21 a request
    assert len(out) == 80 and store.count("requests", "status = 'done'") == 80


def test_budget_stops_before_overspending(store, pool):
    with start_server("echo") as server:
        teacher = _teacher(server.url, price_per_mtok=(1e4, 1e4))  # one cent a token
        jobs = _jobs(store, pool, teacher, 30)
        with pytest.raises(DistillError, match=r"budget \$3.0000 reached"):
            run_api_requests(store, teacher, jobs, GenParams(max_new_tokens=16), purpose="t", run_id="r",
                             max_budget_usd=3.0, max_concurrency=4)
        spent = store.query("SELECT sum(cost_usd) AS usd, count(*) AS n FROM requests WHERE status = 'done'")[0]
        assert 0 < spent["usd"] <= 3.0 and 0 < spent["n"] < 30
        assert server.stats["requests"] == spent["n"]  # nothing was sent that was not paid for and kept
        # Every scheduled request has a row: the ones the budget stopped say so, and a re-run sends them.
        left = store.query("SELECT count(*) AS n FROM requests WHERE status = 'error' AND error LIKE 'not_started:%'")
        assert store.count("requests") == 30 and left[0]["n"] == 30 - spent["n"]


def test_secret_key_is_nowhere_in_the_store_output_or_logs(store, pool, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="LiteLLM")
    with start_server("echo", faults="429@1;500@2;malformed@3;drop@4") as server:
        teacher = _teacher(server.url, api_key=SECRET, timeout_s=2)
        bad = ApiTeacher("wrong-model", "openai/no-such-model", api_base=server.url, api_key=SECRET)
        run_api_requests(store, teacher, _jobs(store, pool, teacher, 6), GenParams(), purpose="t", run_id="r",
                         max_retries=0, **FAST)
        run_api_requests(store, bad, _jobs(store, pool, teacher, 2), GenParams(), purpose="t", run_id="r")
    errors = store.query("SELECT error FROM requests WHERE status = 'error'")
    assert len(errors) >= 4 and any("404" in e["error"] or "not exist" in e["error"] for e in errors)
    tables = [r["table_name"] for r in store.query("SELECT table_name FROM information_schema.tables")]
    for table in tables:
        assert SECRET not in str(store.query(f"SELECT * FROM {table}")), table
    captured = capfd.readouterr()
    assert SECRET not in captured.out + captured.err
    assert SECRET not in caplog.text and SECRET not in str([r.__dict__ for r in caplog.records])


def test_tiny_random_model_behind_the_server(store, pool, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    with start_server("tiny-random") as server:
        teacher = ApiTeacher("tiny-api", "openai/tiny-random", api_base=server.url, api_key="sk-local")
        jobs = _jobs(store, pool, teacher, 4)
        params = GenParams(max_new_tokens=8, temperature=0.7, num_samples=2)
        out = run_api_requests(store, teacher, jobs, params, purpose="t", run_id="r1")
        assert len(out) == 8 and all(r["completion_tokens"] > 0 for r in out.values())
        assert server.stats["batches"] < 8  # concurrent requests were batched onto the model
        run_api_requests(store, teacher, jobs, params, purpose="t", run_id="r2")
        assert server.stats["requests"] == 8


class _Scripted(ApiTeacher):
    """No HTTP: fails with a given error class from call `fail_from` on."""

    def __init__(self, kind: str, fail_from: int) -> None:
        super().__init__("scripted-api", "openai/none", api_key=SECRET)
        self.kind, self.fail_from, self.calls = kind, fail_from, 0

    async def agenerate(self, messages, **kw) -> Generation:
        self.calls += 1
        await asyncio.sleep(0.001)
        if self.calls >= self.fail_from:
            raise ApiError(self.kind, "Incorrect API key provided: sk-***", status=401)
        return Generation(text="Answer: Yes", prompt_tokens=3, completion_tokens=2)


def test_a_rejected_key_stops_at_once_and_keeps_what_finished(store, pool):
    teacher = _Scripted("auth", fail_from=4)
    jobs = _jobs(store, pool, teacher, 30)
    with pytest.raises(DistillError, match="the API rejected the key"):
        run_api_requests(store, teacher, jobs, GenParams(), purpose="t", run_id="r", max_concurrency=1)
    assert teacher.calls == 4 and store.count("requests", "status = 'done'") == 3


def test_a_failing_postprocess_surfaces_instead_of_hanging(store, pool):
    teacher = _Scripted("auth", fail_from=10**9)

    def post(*_):
        raise ValueError("parser bug")
    with pytest.raises(ValueError, match="parser bug"):
        run_api_requests(store, teacher, _jobs(store, pool, teacher, 40), GenParams(num_samples=20), purpose="t",
                         run_id="r", postprocess=post, max_concurrency=8)
    assert teacher.calls < 800  # the workers were stopped, not left to run the whole set


def test_sync_wrapper_works_inside_a_running_event_loop(store, pool):
    teacher = _Scripted("auth", fail_from=10**9)

    async def notebook_cell() -> dict:
        return run_api_requests(store, teacher, _jobs(store, pool, teacher, 3), GenParams(), purpose="t", run_id="r")
    assert len(asyncio.run(notebook_cell())) == 3
