"""Offline logit KD: train a student on teacher log-probs stored by the teacher pass.

    python -m train.teacher_pass --store S --data runs/sft.jsonl --teacher T --student STUDENT --k 20
    python -m train.logit_kd --store S --data runs/sft.jsonl --teacher T --student STUDENT --max-steps 50

    accelerate launch --config_file train/configs/ddp.yaml -m train.logit_kd --store S ...

TRL has no trainer for cached teacher log-probs (trl #2255, #3055), so this is ours: a PyTorch
loop on `accelerate` (AdamW, gradient accumulation, device placement, mixed precision, DDP / FSDP
/ DeepSpeed under `accelerate launch`) whose loss is train/kd_losses.py on the student's final
hidden states at the completion positions, chunked so the full-vocabulary logits are never
materialised. Targets are matched to rows by sample id (never by step), and refused when the
student's tokenisation of a row differs from the one the teacher scored (token-id hash). Each
accumulated step is normalised by the target tokens of all its micro-batches on all processes
(trl #4719), which is why this is not accelerate's own loss averaging.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path


from store.store import Store
from core.errors import DistillError
from train.teacher_pass import encode, load_targets, read_rows, tokenizer_hash, tokens_hash
from train.cli import add_settings, run_script, settings_from
from train.common import cached_summary, checkpoint_root, publish, record_summary
from train.fast import load_student, resolve_speed
from train.kd_step import KDSettings, kd_accelerator, kd_student, kd_train_step
from store.runs import recorded_run

def build_examples(store: Store, data: str | Path, teacher: str, tokenizer, settings: KDSettings) -> list[dict]:
    """Token ids of every export row with its stored teacher targets, checked against each other."""
    rows = read_rows(data)
    targets = store.teacher_logprobs([r["sample_id"] for r in rows], teacher, settings.mode, settings.k)
    missing = [r["sample_id"] for r in rows if r["sample_id"] not in targets]
    if missing:
        raise DistillError(f"{len(missing)} of {len(rows)} rows have no {settings.mode} k={settings.k} targets from "
                           f"{teacher}: run `python -m train.teacher_pass` on this export first")
    tok_hash, examples = tokenizer_hash(tokenizer), []
    for r in rows:
        t = targets[r["sample_id"]]
        ids, n_prompt = encode(tokenizer, r["messages"], settings.max_length)
        if t["tokenizer_hash"] != tok_hash or t["tokens_hash"] != tokens_hash(ids) or t["prompt_tokens"] != n_prompt:
            raise DistillError(f"teacher targets of sample {r['sample_id']} were computed on a different tokenisation "
                               "(tokenizer, chat template or max length changed): re-run the teacher pass")
        t_ids, t_values = load_targets(t)
        examples.append({"input_ids": ids, "n_prompt": n_prompt, "t_ids": t_ids, "t_values": t_values})
    return examples


def save_checkpoint(accelerator, path: Path, losses: list[float]) -> None:
    """Model, optimizer and RNG states of every process (accelerate), then the step and losses so far.

    `kd_state.json` is written last, by rename: a checkpoint without it was cut off and is ignored.
    Older checkpoints go once this one is complete (one is enough to resume; each holds the optimizer).
    """
    accelerator.save_state(str(path), safe_serialization=False)  # tied embeddings: safetensors refuses them
    if accelerator.is_main_process:
        tmp = path / "kd_state.json.tmp"
        tmp.write_text(json.dumps({"step": len(losses), "losses": losses}))
        tmp.replace(path / "kd_state.json")
        for old in path.parent.glob("checkpoint-*"):
            if old != path:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def resume(accelerator, checkpoints: Path) -> tuple[int, list[float]]:
    """Load the latest complete checkpoint into the prepared model and optimizer: (steps done, their losses)."""
    done = [p for p in checkpoints.glob("checkpoint-*") if (p / "kd_state.json").exists()]
    if not done:
        return 0, []
    latest = max(done, key=lambda p: int(p.name.rsplit("-", 1)[1]))
    accelerator.load_state(str(latest))
    state = json.loads((latest / "kd_state.json").read_text())
    return state["step"], state["losses"]


def train_logit_kd(store: Store | str | Path, data: str | Path, teacher: str, student: str, output_dir: str | Path,
                   settings: KDSettings = KDSettings()) -> dict:
    """Train `student` on the stored targets of `teacher` for an SFT export; returns losses and the model dir.

    `store` is an open Store or the path of one; a path is opened read-only just to read the
    targets, so that every process of `accelerate launch` can read them at once (DuckDB lets
    one process write a file, or many read it).
    """
    import hashlib

    import torch
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    from clients.models import model_path

    speed = resolve_speed(settings.speed)
    accelerator = kd_accelerator(settings, speed)
    student_dir = model_path(student)
    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    # The main process may have just written the run's start to the store (recorded_run): wait for it.
    accelerator.wait_for_everyone()
    if isinstance(store, Store):
        examples = build_examples(store, data, teacher, tokenizer, settings)
    else:
        with Store(store, read_only=True) as readonly:
            examples = build_examples(readonly, data, teacher, tokenizer, settings)
    # How often it checkpoints does not change the model, so it is not part of the cache key.
    fingerprint = {k: v for k, v in asdict(settings).items() if k != "save_steps"} | {"speed": speed.name}
    key = hashlib.sha256(Path(data).read_bytes() + json.dumps([teacher, student, fingerprint]).encode())
    final_dir = Path(output_dir) / f"kd-student-{key.hexdigest()[:12]}"
    cached = cached_summary(final_dir)
    if cached:
        return cached
    torch.manual_seed(settings.seed)
    # The batches are right-padded, which the varlen attention of the fast path takes as B sequences.
    kd = kd_student(load_student(str(student_dir), speed), settings).train()
    optimizer = torch.optim.AdamW(kd.parameters(), lr=settings.learning_rate)
    kd, optimizer = accelerator.prepare(kd, optimizer)
    width = settings.batch_size * accelerator.num_processes  # rows of one micro-batch over all processes
    checkpoints = checkpoint_root(final_dir)
    start, losses = resume(accelerator, checkpoints)
    order, rng, began = [], random.Random(settings.seed), time.perf_counter()
    bar = tqdm(total=settings.max_steps, initial=start, desc="logit KD", unit="step",
               disable=not accelerator.is_main_process)
    for step in range(settings.max_steps):
        # Every process draws the same micro-batches (same seed) and trains on its own slice of each.
        # Steps done before a resume are drawn again and skipped, so the data order stays the same.
        micro = []
        for _ in range(settings.grad_accum):
            while len(order) < width:
                order += rng.sample(range(len(examples)), len(examples))
            micro.append([examples[i] for i in order[:width]])
            del order[:width]
        if step < start:
            continue
        losses.append(kd_train_step(accelerator, kd, optimizer, micro).item())
        bar.update()
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if settings.save_steps and (step + 1) % settings.save_steps == 0 and step + 1 < settings.max_steps:
            save_checkpoint(accelerator, checkpoints / f"checkpoint-{step + 1}", losses)
    bar.close()
    summary = {"model_dir": str(final_dir), "student": student, "teacher": teacher, "rows": len(examples),
               "steps": settings.max_steps, "first_loss": losses[0] if losses else math.nan,
               "last_loss": losses[-1] if losses else math.nan, "losses": losses,
               "train_runtime_s": time.perf_counter() - began, "settings": asdict(settings), "resumed_from_step": start}
    state = accelerator.get_state_dict(kd)  # every process takes part (FSDP / ZeRO-3 gather the weights)
    tmp = final_dir.with_name(final_dir.name + ".tmp")
    if accelerator.is_main_process:
        weights = {k.removeprefix("student."): v for k, v in state.items()}
        accelerator.unwrap_model(kd).student.save_pretrained(tmp, state_dict=weights)
    publish(tmp, final_dir, summary, tokenizer)  # every process: the main one writes, the others wait
    if accelerator.is_main_process:
        shutil.rmtree(checkpoints, ignore_errors=True)  # the final model is the cached result now
    accelerator.wait_for_everyone()  # the other processes return once the model is in place
    return dict(summary, cached=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True)
    parser.add_argument("--data", required=True, help="the SFT export the teacher pass scored")
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", required=True)
    parser.add_argument("--output", default="runs/kd-student")
    add_settings(parser, KDSettings)
    args = parser.parse_args(argv)
    settings = settings_from(args, KDSettings)
    with recorded_run(args.store, "train-logit-kd", vars(args)) as run:
        summary = train_logit_kd(args.store, args.data, args.teacher, args.student, args.output, settings)
        record_summary(run, {k: v for k, v in summary.items() if k != "losses"})
    print(json.dumps(run.summary, indent=1))


if __name__ == "__main__":
    run_script(main)
