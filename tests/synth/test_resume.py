"""kill -9 in the middle of synthesis, re-run: nothing lost, nothing duplicated, no repeated call."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from store.store import Store
from prompts.rows import PromptRow, stable_id

ROOT = Path(__file__).resolve().parents[2]


def _synth_cmd(store: Path) -> list[str]:
    return [sys.executable, "-m", "distill.cli", "synth", "--store", str(store), "--pool", "p",
            "--teacher", "tiny-random", "--samples", "2", "--max-new-tokens", "24", "--examples", "0"]


def test_kill_9_mid_run_then_rerun_finishes_exactly_once(tmp_path):
    env = dict(os.environ, DISTILL_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    store_path = tmp_path / "s.duckdb"
    rows = [PromptRow(id=stable_id("r", i), source="t", task="t", input=f"What is {i} plus {i}?",
                      gold=str(2 * i), split="train") for i in range(64)]
    with Store(store_path) as store:
        store.add_prompts(rows, "p")

    proc = subprocess.Popen(_synth_cmd(store_path), env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    seen, deadline = "", time.time() + 300
    while "prompts 32/64" not in seen and time.time() < deadline:  # the second chunk has started
        ch = proc.stderr.read(1)
        if not ch:
            break
        seen += ch
    assert "prompts 32/64" in seen, seen[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    with Store(store_path) as store:
        partial = store.count("requests")
    assert 0 < partial < 128, "the kill should land between the first and the last chunk"

    rerun = subprocess.run(_synth_cmd(store_path), env=env, cwd=tmp_path, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{partial} done, {128 - partial} to go" in rerun.stderr
    with Store(store_path, read_only=True) as store:
        assert store.count("requests") == 128
        assert store.count("samples") == 128
        assert store.query("SELECT count(DISTINCT key) AS n FROM requests")[0]["n"] == 128
        per_prompt = store.query("SELECT prompt_id, count(*) AS n FROM samples GROUP BY 1")
        assert len(per_prompt) == 64 and {r["n"] for r in per_prompt} == {2}
