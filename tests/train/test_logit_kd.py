"""Offline logit KD end to end on tiny models: teacher pass -> stored targets -> student loss goes down."""
import json

import pytest

from core.errors import DistillError
from train.logit_kd import KDSettings, train_logit_kd
from train.teacher_pass import teacher_pass

MESSAGES = [[{"role": "user", "content": f"What is {i} plus {i}?"},
             {"role": "assistant", "content": f"Reasoning: add them.\nAnswer: {2 * i}"}] for i in range(6)]


@pytest.fixture
def export(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps({"messages": m, "sample_id": f"s{i}"}) + "\n" for i, m in enumerate(MESSAGES)))
    return path


@pytest.mark.parametrize("divergence,mode", [("forward_kl", "topk"), ("jsd", "topk"), ("forward_kl", "sampled")])
def test_student_loss_goes_down_on_stored_targets(store, export, student, tmp_path, divergence, mode):
    teacher_pass(store, export, "tiny-random", student, "r", k=8, mode=mode)
    settings = KDSettings(max_steps=8, batch_size=3, grad_accum=2, learning_rate=1e-2, k=8, mode=mode,
                          divergence=divergence, chunk_size=7)
    out = train_logit_kd(store, export, "tiny-random", student, tmp_path / "kd", settings)
    losses = out["losses"]  # the same batches recur (6 rows, 6 per step): every step must lower the loss
    assert out["steps"] == 8 and all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.99 * losses[0]
    again = train_logit_kd(store, export, "tiny-random", student, tmp_path / "kd", settings)
    assert again["cached"] is True


def test_missing_or_mismatched_targets_are_refused(store, export, tmp_path):
    with pytest.raises(DistillError, match="teacher_pass"):
        train_logit_kd(store, export, "tiny-random", "tiny-random", tmp_path / "kd", KDSettings(k=8))
    teacher_pass(store, export, "tiny-random", "tiny-random", "r", k=8)
    store.con.execute("UPDATE teacher_logprobs SET tokens_hash = 'other' WHERE sample_id = 's2'")
    with pytest.raises(DistillError, match="different tokenisation"):
        train_logit_kd(store, export, "tiny-random", "tiny-random", tmp_path / "kd", KDSettings(k=8))


def test_runs_unchanged_under_accelerate_launch_and_is_recorded(export, student, tmp_path):
    """`accelerate launch -m train.logit_kd` (1 CPU process): loss falls, model saved, run in the store."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import duckdb

    from store.store import Store

    db = tmp_path / "s.duckdb"
    with Store(db) as store:  # closed before the launch: DuckDB lets one process write the file
        teacher_pass(store, export, "tiny-random", student, "r", k=8)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
           "--cpu", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "train.logit_kd", "--store", str(db), "--data", str(export), "--teacher", "tiny-random",
           "--student", student, "--output", str(tmp_path / "kd"), "--max-steps", "6", "--batch-size", "3",
           "--grad-accum", "2", "--learning-rate", "1e-2", "--k", "8", "--chunk-size", "7"]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    con = duckdb.connect(str(db), read_only=True)
    stage, status, config, summary = con.execute(
        "SELECT stage, status, config, summary FROM runs WHERE stage = 'train-logit-kd'").fetchone()
    con.close()
    summary, config = json.loads(summary), json.loads(config)
    assert status == "done" and config["learning_rate"] == 1e-2 and config["grad_accum"] == 2
    assert summary["steps"] == 6 and summary["last_loss"] < 0.99 * summary["first_loss"]
    assert (Path(summary["model_dir"]) / "model.safetensors").exists()
    assert summary["checkpoints"] == [summary["model_dir"]]


def test_run_killed_after_a_checkpoint_resumes_with_the_same_losses(store, export, student, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    import train.logit_kd as logit_kd

    teacher_pass(store, export, "tiny-random", student, "r", k=8)
    settings = KDSettings(max_steps=5, save_steps=2, batch_size=2, learning_rate=1e-2, k=8)
    whole = train_logit_kd(store, export, "tiny-random", student, tmp_path / "whole", settings)

    save = logit_kd.save_checkpoint

    def save_then_die(*args, **kwargs):  # the process dies right after its second checkpoint (step 4)
        save(*args, **kwargs)
        if args[1].name == "checkpoint-4":
            raise KeyboardInterrupt

    monkeypatch.setattr(logit_kd, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_logit_kd(store, export, "tiny-random", student, tmp_path / "cut", settings)
    monkeypatch.undo()
    ckpts = list((tmp_path / "cut" / "checkpoints").glob("*/checkpoint-*"))
    assert [p.name for p in ckpts] == ["checkpoint-4"]  # the older checkpoint went once this one was complete

    resumed = train_logit_kd(store, export, "tiny-random", student, tmp_path / "cut", settings)
    assert resumed["resumed_from_step"] == 4 and whole["resumed_from_step"] == 0
    assert resumed["losses"] == pytest.approx(whole["losses"], rel=1e-5)
    a, b = (load_file(f"{r['model_dir']}/model.safetensors") for r in (whole, resumed))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not (tmp_path / "cut" / "checkpoints" / ckpts[0].parent.name).exists()  # gone once the model is final


def test_negative_save_steps_is_refused_before_training(store, export, student, tmp_path):
    teacher_pass(store, export, "tiny-random", student, "r", k=8)
    with pytest.raises(DistillError, match="save_steps=-1"):
        train_logit_kd(store, export, "tiny-random", student, tmp_path / "kd", KDSettings(max_steps=2, k=8, save_steps=-1))
    assert not (tmp_path / "kd").exists()
