"""The DDP launch profile (train/configs/ddp.yaml) trains for real: two CPU processes over gloo, and
the per-step losses match one process on the same global batch (SFT through TRL, logit KD ours)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from store.store import Store
from train.teacher_pass import teacher_pass

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = [[{"role": "user", "content": f"What is {i} plus {i}?"},
             {"role": "assistant", "content": f"Reasoning: add {i} and {i}.\nAnswer: {2 * i}"}] for i in range(8)]


@pytest.fixture
def export(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps({"messages": m, "sample_id": f"s{i}"}) + "\n" for i, m in enumerate(MESSAGES)))
    return path


def _launch(processes: int, module: str, args: list[str], tmp_path: Path) -> None:
    """`accelerate launch` with the DDP profile (torchrun underneath). CI has no GPU: ACCELERATE_USE_CPU
    makes the processes join over gloo (accelerate's MULTI_CPU); `--cpu` would start only one process."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "train/configs/ddp.yaml"),
           "--num_processes", str(processes), "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", "0", "-m", module, *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true"))
    assert proc.returncode == 0, proc.stderr[-3000:]


def _summaries(db: Path, stage: str) -> list[dict]:
    with Store(db, read_only=True) as store:
        return [json.loads(r["summary"]) if isinstance(r["summary"], str) else r["summary"]
                for r in store.runs() if r["stage"] == stage]


def _one_and_two_processes(module: str, common: list[str], db: Path, tmp_path: Path) -> tuple[dict, dict]:
    """The same global batch, 4 rows on one process and 2 rows on each of two: the two runs' summaries."""
    _launch(1, module, [*common, "--output", str(tmp_path / "one"), "--batch-size", "4"], tmp_path)
    _launch(2, module, [*common, "--output", str(tmp_path / "two"), "--batch-size", "2"], tmp_path)
    return tuple(_summaries(db, "train-" + module.split(".")[1].replace("_", "-")))


def test_logit_kd_on_two_processes_matches_one(export, student, tmp_path):
    db = tmp_path / "s.duckdb"
    with Store(db) as store:
        teacher_pass(store, export, "tiny-random", student, "r", k=8)
    common = ["--store", str(db), "--data", str(export), "--teacher", "tiny-random", "--student", student,
              "--max-steps", "4", "--learning-rate", "1e-2", "--k", "8", "--speed", "cpu"]
    one, two = _one_and_two_processes("train.logit_kd", common, db, tmp_path)
    assert one["steps"] == two["steps"] == 4
    assert two["first_loss"] == pytest.approx(one["first_loss"], rel=1e-4)
    assert two["last_loss"] == pytest.approx(one["last_loss"], rel=1e-3)


def test_sft_on_two_processes_matches_one(export, tmp_path):
    db = tmp_path / "s.duckdb"
    common = ["--store", str(db), "--data", str(export), "--student", "tiny-random", "--max-steps", "4",
              "--learning-rate", "1e-3", "--max-length", "256", "--speed", "cpu"]
    one, two = _one_and_two_processes("train.sft", common, db, tmp_path)
    assert one["steps"] == two["steps"] == 4
    assert two["first_loss"] == pytest.approx(one["first_loss"], rel=1e-3)
    assert two["last_loss"] == pytest.approx(one["last_loss"], rel=1e-2)
