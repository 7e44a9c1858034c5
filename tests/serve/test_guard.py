"""`distill serve` safety: an optional API key (required beyond loopback), caps on body size and
on completions per request, and a JSON error (never a traceback) for malformed input."""
from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from core.errors import DistillError
from serve.cli import main
from serve.server import ServeGuard, start_server

KEY = "sk-serve-test-0123456789"
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture(scope="module")
def guarded():
    with start_server("echo", guard=ServeGuard(api_key=KEY, max_body_mb=1, max_choices=8)) as handle:
        yield handle


def _post(server, body=None, *, content=None, key=KEY, path="/chat/completions"):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(server.url + path, json=body, content=content, headers=headers, timeout=30)


@pytest.mark.parametrize("key", [None, "wrong-key-0123456789", KEY + "x", "", KEY[:-1]])
def test_a_missing_or_wrong_key_is_401(guarded, key):
    r = _post(guarded, CHAT, key=key)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert KEY not in r.text


def test_the_right_key_is_served_and_health_needs_none(guarded):
    assert _post(guarded, CHAT).status_code == 200
    assert httpx.get(guarded.url.removesuffix("/v1") + "/health").json() == {"status": "ok"}
    models = httpx.get(guarded.url + "/models", headers={"Authorization": f"Bearer {KEY}"})
    assert models.status_code == 200 and httpx.get(guarded.url + "/models").status_code == 401


@pytest.mark.parametrize("body, status, words", [
    ({**CHAT, "n": 9}, 400, "allows 8"),
    ({"model": "echo", "prompt": ["a"] * 3, "n": 3}, 400, "asks for 9 completions"),
    ({"model": "echo", "prompt": "x" * (2 << 20)}, 413, "over 1 MB"),
])
def test_requests_over_the_caps_are_refused(guarded, body, status, words):
    path = "/completions" if "prompt" in body else "/chat/completions"
    r = _post(guarded, body, path=path)
    assert r.status_code == status and words in r.json()["error"]["message"], r.text


@pytest.mark.parametrize("content", [b"{", b"[1, 2]", b"null", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000,
                                     b'{"model": "echo", "messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
                                     b'{"model": "echo", "messages": [{"role": 5, "content": []}]}'])
def test_malformed_input_is_a_400_without_a_traceback(guarded, content):
    r = _post(guarded, content=content)
    assert r.status_code == 400, r.text
    assert "Traceback" not in r.text and "File \"" not in r.text and r.json()["error"]["message"]


def test_an_uploaded_file_over_the_cap_is_refused(guarded):
    files = {"file": ("big.jsonl", b"x" * (2 << 20)), "purpose": (None, "batch")}
    r = httpx.post(guarded.url + "/files", files=files, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert r.status_code == 413


def test_beyond_loopback_needs_a_key():
    with pytest.raises(DistillError, match="--api-key-env"):
        start_server("echo", host="0.0.0.0")
    with pytest.raises(DistillError, match="--max-choices"):
        start_server("echo", guard=ServeGuard(max_choices=0))


def test_the_cli_reads_the_key_from_the_environment_only(monkeypatch, capsys):
    monkeypatch.delenv("SERVE_KEY", raising=False)
    assert main(["--model", "echo", "--api-key-env", "SERVE_KEY"]) == 2
    assert "SERVE_KEY" in capsys.readouterr().err
    assert main(["--model", "echo", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--api-key-env" in capsys.readouterr().err


def test_help_shows_every_option():
    out = subprocess.run([sys.executable, "-m", "distill.cli", "serve", "--help"], capture_output=True,
                         text=True, timeout=60).stdout
    for flag in ("--model", "--cascade", "--host", "--port", "--faults", "--latency", "--api-key-env",
                 "--max-body-mb", "--max-choices"):
        assert flag in out, flag
