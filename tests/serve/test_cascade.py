"""`distill serve --cascade`: a real HTTP server on loopback, driven by the `openai` client.

Tiny random-weight models stand in for student and teachers: their answers are gibberish, but
their token log-probs are real, so confidences, routing and batching run exactly as with real
models. A long batch wait makes "concurrent requests share a batch" robust on a busy machine.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from core.errors import DistillError
from serve.cascade import check_spec, start_cascade_server
from clients.tiny import build_tiny_model

ROOT = Path(__file__).resolve().parents[2]
PLATT = {"method": "platt", "params": {"a": 1.3, "b": -0.2}}
N = 8


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Student (the registry's tiny-random) and two distinct tiny teachers, in a private cache."""
    root = tmp_path_factory.mktemp("cascade")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISTILL_CACHE", str(root / "cache"))
        middle = build_tiny_model(root / "middle", seed=2)
        teacher = build_tiny_model(root / "teacher", seed=1)
        yield {"student": "tiny-random", "middle": str(middle), "teacher": str(teacher), "dir": root}


def write_spec(path: Path, models: list[str], thresholds: list[float], **extra) -> Path:
    spec = {"version": 1, "models": models, "signal": "seq_prob", "calibrators": [PLATT] * len(thresholds),
            "thresholds": thresholds, "task": "test", **extra}
    path.write_text(json.dumps(spec))
    return path


def messages(i: int) -> list[dict]:
    return [{"role": "user", "content": f"question {i}: " + "why " * (i % 4)}]


def ask_concurrently(url: str, n: int = N, **extra) -> list:
    """n chat requests at once through the openai client, as n client threads would send them."""
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key="sk-test", max_retries=0, timeout=60)

    def ask(i: int):
        return client.chat.completions.create(model="cascade", messages=messages(i), max_tokens=8, temperature=0,
                                              **extra)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(ask, range(n)))


def cascade(resp) -> dict:
    return resp.model_extra["cascade"]


# ---- routing and batching ------------------------------------------------------------------------


def test_concurrent_requests_batch_on_the_student_and_route_by_threshold(models, tmp_path):
    student, teacher = models["student"], models["teacher"]
    # Threshold 0: the student answers everything; its confidences pick a threshold that splits them.
    with start_cascade_server(write_spec(tmp_path / "zero.json", [student, teacher], [0.0]),
                              batch_wait_ms=200) as server:
        first = ask_concurrently(server.url)
        stats = server.stats
    assert all(r.model == student and not cascade(r)["escalated"] for r in first)
    assert stats["models"][student]["batched_rows"] == N and stats["models"][student]["answered"] == N
    assert stats["models"][student]["batches"] < N  # concurrent requests shared generate() calls
    assert stats["models"][teacher]["batches"] == 0
    confidences = sorted(cascade(r)["confidence"] for r in first)
    assert all(0.0 <= c <= 1.0 for c in confidences) and all(cascade(r)["calibrated"] for r in first)
    threshold = (confidences[N // 2 - 1] + confidences[N // 2]) / 2

    with start_cascade_server(write_spec(tmp_path / "split.json", [student, teacher], [threshold]),
                              batch_wait_ms=200) as server:
        second = ask_concurrently(server.url)
        stats = server.stats
    assert stats["requests"] == N and stats["models"][student]["batched_rows"] == N
    assert stats["models"][student]["batches"] < N
    assert stats["models"][student]["answered"] == N // 2 and stats["models"][teacher]["answered"] == N // 2
    for resp, alone in zip(second, first):
        info = cascade(resp)
        student_step = info["path"][0]
        assert student_step["model"] == student and student_step["threshold"] == pytest.approx(threshold)
        assert student_step["confidence"] == pytest.approx(cascade(alone)["confidence"], abs=1e-4)
        assert 0.0 <= info["confidence"] <= 1.0 and resp.model == info["answered_by"]
        if student_step["confidence"] >= threshold:
            assert info["answered_by"] == student and not info["escalated"] and len(info["path"]) == 1
            assert resp.choices[0].message.content == alone.choices[0].message.content
        else:
            assert info["answered_by"] == teacher and info["escalated"] and not info["calibrated"]
            assert [s["model"] for s in info["path"]] == [student, teacher] and info["threshold"] is None
            # Usage sums both models; they share the tokenizer, so the prompt is counted twice.
            assert resp.usage.prompt_tokens == 2 * alone.usage.prompt_tokens
        assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_threshold_one_always_escalates_to_the_teacher(models, tmp_path):
    student, teacher = models["student"], models["teacher"]
    spec = write_spec(tmp_path / "one.json", [student, teacher], [1.0])
    with start_cascade_server(spec, batch_wait_ms=200) as server:
        out = ask_concurrently(server.url, logprobs=True)
        stats = server.stats
    for resp in out:
        info = cascade(resp)
        assert resp.model == teacher and info["answered_by"] == teacher and info["escalated"]
        assert info["path"][0]["confidence"] < 1.0 and 0.0 <= info["confidence"] <= 1.0
        # Logprobs describe the answer that was returned: the teacher's tokens.
        assert len(resp.choices[0].logprobs.content or []) <= min(8, resp.usage.completion_tokens)
    assert stats["models"][teacher]["answered"] == N and stats["models"][teacher]["batched_rows"] == N
    # Requests one student batch escalates reach the teacher together and share a batch there too.
    assert stats["models"][teacher]["batches"] < N


def test_three_model_chain_routes_through_the_middle_model(models, tmp_path):
    student, middle, teacher = models["student"], models["middle"], models["teacher"]
    spec = write_spec(tmp_path / "three.json", [student, middle, teacher], [1.0, 0.0])
    with start_cascade_server(spec, batch_wait_ms=100) as server:
        out = ask_concurrently(server.url, n=4)
        stats = server.stats
    for resp in out:
        info = cascade(resp)
        assert resp.model == middle and info["escalated"] and info["calibrated"]
        assert [s["model"] for s in info["path"]] == [student, middle] and info["threshold"] == 0.0
    assert stats["models"][middle]["answered"] == 4 and stats["models"][teacher]["batches"] == 0


def test_requests_a_cascade_cannot_answer_are_openai_errors(models, tmp_path):
    spec = write_spec(tmp_path / "spec.json", [models["student"], models["teacher"]], [0.5])
    with start_cascade_server(spec) as server, httpx.Client(timeout=30) as client:
        assert [m["id"] for m in client.get(server.url + "/models").json()["data"]] == ["cascade"]
        body = {"model": "cascade", "messages": messages(0), "max_tokens": 4}
        r = client.post(server.url + "/chat/completions", json={**body, "n": 2})
        assert r.status_code == 400 and r.json()["error"]["param"] == "n"
        r = client.post(server.url + "/chat/completions", json={**body, "model": "gpt-4o"})
        assert r.status_code == 404 and "cascade" in r.json()["error"]["message"]
        r = client.post(server.url + "/completions", json={"model": "cascade", "prompt": "hi"})
        assert r.status_code == 400 and "chat/completions" in r.json()["error"]["message"]


# ---- the CLI -------------------------------------------------------------------------------------


def test_distill_serve_cascade_answers_concurrent_requests(models, tmp_path):
    """The whole path: `python -m distill.cli serve --cascade`, the openai client, SIGTERM, final stats."""
    student, teacher = models["student"], models["teacher"]
    spec = write_spec(tmp_path / "cli.json", [student, teacher], [0.5])
    env = {**os.environ, "DISTILL_CACHE": str(models["dir"] / "cache"), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "distill.cli", "serve", "--cascade", str(spec), "--port", "0",
           "--batch-wait-ms", "200"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # "serving cascade ... at http://127.0.0.1:PORT/v1 (Ctrl-C stops)"
        assert " at http://" in line, proc.stderr.read() if proc.poll() is not None else line
        url = line.split(" at ")[1].split()[0]
        out = ask_concurrently(url)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert all(cascade(r)["answered_by"] == r.model in (student, teacher) for r in out)
    stats = json.loads(err.split("stopped; ")[1].splitlines()[0])
    assert stats["requests"] == N and stats["models"][student]["batched_rows"] == N
    assert stats["models"][student]["batches"] < N
    assert sum(m["answered"] for m in stats["models"].values()) == N


# ---- bad specs -----------------------------------------------------------------------------------

GOOD = {"version": 1, "models": ["a", "b"], "signal": "seq_prob", "calibrators": [PLATT], "thresholds": [0.6]}


@pytest.mark.parametrize("change, message", [
    ({"signal": "max_prob"}, "refit the cascade with --signal seq_prob, token_q10 or token_margin"),
    ({"signal": "vibes"}, "unknown signal"),
    ({"thresholds": [1.5]}, r"thresholds\[0\] must be a number in \[0, 1\]"),
    ({"thresholds": [0.5, 0.5]}, "'thresholds' needs 1"),
    ({"calibrators": []}, "'calibrators' needs 1 entry"),
    ({"calibrators": [{"method": "platt", "params": {"a": 1.0}}]}, r"calibrators\[0\] \(platt\) has bad params"),
    ({"calibrators": [{"method": "magic"}]}, r"calibrators\[0\] must be"),
    ({"models": ["a"], "calibrators": [], "thresholds": []}, "at least two"),
    ({"models": ["a", "a"]}, "names a model twice"),
    ({"models": ["a", "api:openai/gpt-4o"]}, "local models only"),
    ({"version": 2}, "version 2 is not supported"),
    ({"extra": 1}, "unknown key"),
])
def test_bad_specs_are_one_line_errors(change, message):
    with pytest.raises(DistillError, match=message) as err:
        check_spec({**GOOD, **change})
    assert "\n" not in str(err.value)
    check_spec(GOOD)  # the baseline is valid


def test_cli_refuses_bad_specs_with_exit_2(models, tmp_path, capsys, monkeypatch):
    from distill.cli import main

    monkeypatch.setenv("DISTILL_CACHE", str(models["dir"] / "cache"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**GOOD, "models": [models["student"], models["teacher"]], "signal": "margin"}))
    unknown = write_spec(tmp_path / "unknown.json", [models["student"], "no-such-model"], [0.5])
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    for argv, expected in [(["--cascade", str(bad)], "--signal seq_prob"),
                           (["--cascade", str(unknown)], "unknown model 'no-such-model'"),
                           (["--cascade", str(broken)], "not valid JSON"),
                           (["--cascade", str(tmp_path / "missing.json")], "distill eval cascade"),
                           (["--cascade", str(bad), "--model", "echo"], "one of --model"),
                           ([], "one of --model")]:
        assert main(["serve", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
