"""`distill view`: flags, one-line errors, the access token, and the real command serving until SIGTERM."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from core.errors import DistillError
from distill.cli import main as distill_main
from view.app import start_viewer
from view.cli import main

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "view-token-0123456789"


def test_help_shows_an_example(capsys):
    assert distill_main(["view", "--help"]) == 0
    out = capsys.readouterr().out
    assert "example:" in out and "distill view --store" in out and "--token-env" in out


@pytest.mark.parametrize("argv, words", [
    (["--store", "/nonexistent/s.duckdb"], "does not exist"),
    (["--host", "0.0.0.0"], "reachable from other machines"),
    (["--token-env", "DISTILL_VIEW_NO_SUCH_VARIABLE"], "unset or shorter than 8"),
    (["--port", "70000"], "0-65535"),
])
def test_user_mistakes_are_one_line_and_exit_2(seeded, capsys, argv, words):
    code = main(["--store", str(seeded.path), "--port", "0", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and words in err[-1]


def test_beyond_loopback_only_with_a_token(seeded):
    with pytest.raises(DistillError, match="--token-env"):
        start_viewer(seeded.path, host="0.0.0.0")


def test_the_token_is_needed_once_then_a_cookie_carries_it(seeded):
    with start_viewer(seeded.path, token=TOKEN) as viewer:
        assert httpx.get(viewer.url + "runs").status_code == 401
        assert httpx.get(viewer.url + "runs?token=wrong-token-000").status_code == 401
        r = httpx.get(viewer.url + "runs?stage=synth&token=" + TOKEN)
        assert r.status_code == 303 and r.headers["location"] == "/runs?stage=synth"  # the token leaves the URL
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
        with httpx.Client(cookies=r.cookies) as browser:
            page = browser.get(viewer.url + "runs?stage=synth")
            assert page.status_code == 200 and TOKEN not in page.text
        assert httpx.get(viewer.url + "runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert httpx.post(viewer.url + "runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 405


def test_distill_view_serves_until_sigterm(seeded):
    proc = subprocess.Popen([sys.executable, "-m", "distill.cli", "view", "--store", str(seeded.path), "--port", "0"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
        assert url, line + proc.stderr.read()
        assert "read-only" in line
        assert httpx.get(url.group(1) + "pools/yesno", timeout=30).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
