"""The API-teacher path end to end: `distill serve` on loopback, litellm client, CoT stage, CLI."""
from pathlib import Path

import pytest

from store.store import Store
from distill.cli import main
from synth.cot import CotParams, generate_traces
from serve.server import start_server
from clients.teachers import get_teacher

SECRET = "sk-SECRET-api-path-4242"


@pytest.fixture
def tiny_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path_factory.mktemp("cache")))


def _dump_text(path: Path) -> str:
    with Store(path, read_only=True) as store:
        tables = [r["table_name"] for r in store.query("SELECT table_name FROM information_schema.tables")]
        return "\n".join(str(store.query(f"SELECT * FROM {t}")) for t in tables)


def test_cot_through_an_api_teacher_is_cached_and_keeps_no_secret(store, pool, tiny_cache):
    with start_server("tiny-random") as server:
        teacher = get_teacher("api:openai/tiny-random", api_base=server.url, api_key=SECRET, max_concurrency=8)
        out = generate_traces(store, teacher, pool, CotParams(num_samples=2, max_new_tokens=12), run_id="r1")
        n_train = len(store.prompts(pool, split="train"))
        assert out["requests"] == 2 * n_train == store.count("samples")
        served = server.stats["requests"]
        assert served == 2 * n_train
        generate_traces(store, teacher, pool, CotParams(num_samples=2, max_new_tokens=12), run_id="r2")
        assert server.stats["requests"] == served, "a re-run makes no HTTP call"
    assert store.run_summary("r2")["api:openai/tiny-random"]["cache_hits"] == served  # and says it found them
    rows = store.query("SELECT model, status, prompt_tokens, completion_tokens FROM requests")
    assert {r["model"] for r in rows} == {"api:openai/tiny-random"} and {r["status"] for r in rows} == {"done"}
    assert all(r["completion_tokens"] > 0 for r in rows)


def test_cli_synth_with_an_api_teacher_never_stores_the_key(tmp_path, rows, tiny_cache, monkeypatch, capfd):
    store_path = tmp_path / "s.duckdb"
    with Store(store_path) as store:
        store.add_prompts(rows, "yesno")
    monkeypatch.setenv("MY_TEACHER_KEY", SECRET)
    with start_server("tiny-random") as server:
        code = main(["synth", "--store", str(store_path), "--pool", "yesno", "--teacher", "api:openai/tiny-random",
                     "--api-base", server.url, "--api-key-env", "MY_TEACHER_KEY", "--samples", "1",
                     "--max-new-tokens", "8", "--price", "0.15,0.6", "--limit", "4"])
    assert code == 0
    out, err = capfd.readouterr()
    assert "to go" in err and SECRET not in out + err
    text = _dump_text(store_path)
    assert "api:openai/tiny-random" in text and SECRET not in text


@pytest.mark.slow
def test_real_model_behind_distill_serve_through_litellm(store, pool, machine_cache):
    with start_server("smollm2-135m-instruct") as server:
        teacher = get_teacher("api:openai/smollm2-135m-instruct", api_base=server.url, api_key=SECRET)
        generate_traces(store, teacher, pool, CotParams(num_samples=1, max_new_tokens=32), run_id="r", limit=4)
    samples = store.samples(kind="cot", pool=pool)
    assert len(samples) == 4 and all(s["reasoning"] for s in samples)


def test_cli_synth_through_the_batch_api(tmp_path, rows, tiny_cache, monkeypatch, capfd):
    store_path = tmp_path / "s.duckdb"
    with Store(store_path) as store:
        store.add_prompts(rows, "yesno")
    monkeypatch.setenv("MY_TEACHER_KEY", SECRET)
    args = ["synth", "--store", str(store_path), "--pool", "yesno", "--teacher", "api:openai/echo",
            "--api-key-env", "MY_TEACHER_KEY", "--samples", "1", "--max-new-tokens", "8", "--limit", "5",
            "--batch", "--batch-poll-s", "0.1"]
    with start_server("echo") as server:
        assert main(args + ["--api-base", server.url]) == 0
        assert main(args + ["--api-base", server.url]) == 0  # everything done: nothing resubmitted
    err = capfd.readouterr().err
    assert "submitted 5 request(s) in 1 batch(es)" in err and "submitted 0 request(s)" in err
    with Store(store_path, read_only=True) as store:
        assert store.count("requests", "status = 'done'") == 5 and store.count("samples") == 5
    assert SECRET not in _dump_text(store_path) + err


def test_cli_synth_with_failed_requests_exits_3_with_a_tally(tmp_path, rows, tiny_cache, capfd):
    """Requests that failed for good (the server has no such model: 404, not retried): exit 3, one line, the
    run `failed`; transient faults that retries absorb end in exit 0."""
    store_path = tmp_path / "s.duckdb"
    with Store(store_path) as store:
        store.add_prompts(rows, "yesno")
    args = ["synth", "--store", str(store_path), "--pool", "yesno", "--limit", "3", "--max-new-tokens", "8"]
    with start_server("echo", faults="500@1,2;429@3") as server:
        code = main([*args, "--teacher", "api:openai/no-such-model", "--api-base", server.url])
        err = capfd.readouterr().err.strip().splitlines()[-1]
        assert code == 3 and err.startswith("incomplete: 0 of 6 teacher requests done, 6 failed (bad_request 6)")
        assert main([*args, "--teacher", "api:openai/echo", "--api-base", server.url]) == 0
    with Store(store_path, read_only=True) as store:
        assert [r["status"] for r in store.runs("synth")] == ["failed", "done"]
        assert store.count("requests", "status = 'done'") == 6


@pytest.mark.parametrize("faults", ["drop:0.5", "malformed:0.5"])
def test_cli_synth_at_half_faults_finishes_in_one_run(tmp_path, rows, tiny_cache, faults):
    """Half the answers dropped or malformed: retries absorb them, one run, every request done, exit 0.
    20 retries leave a request failing with odds 2^-21; --retry-base-s keeps the test fast."""
    store_path = tmp_path / "s.duckdb"
    with Store(store_path) as store:
        store.add_prompts(rows, "yesno")
        n_train = len(store.prompts("yesno", split="train"))
    args = ["synth", "--store", str(store_path), "--pool", "yesno", "--teacher", "api:openai/echo",
            "--samples", "2", "--max-new-tokens", "8", "--max-concurrency", "8", "--max-retries", "20",
            "--retry-base-s", "0.01"]
    with start_server("echo", faults=faults, seed=5) as server:
        assert main([*args, "--api-base", server.url]) == 0
        assert server.stats["requests"] > 2 * n_train  # the faults happened and were retried
    with Store(store_path, read_only=True) as store:
        assert [r["status"] for r in store.runs("synth")] == ["done"]
        assert store.count("requests") == store.count("requests", "status = 'done'") == 2 * n_train
        assert store.count("samples") == 2 * n_train
