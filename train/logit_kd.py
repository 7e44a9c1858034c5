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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from store.store import Store
from core.errors import DistillError
from train.teacher_pass import encode, load_targets, read_rows, tokenizer_hash, tokens_hash
from train.cli import add_settings, run_script, settings_from
from train.common import cached_summary, checkpoint_root, publish, record_summary
from train.fast import Speed, load_student, resolve_speed
from store.runs import recorded_run

MIXED_PRECISION = ("auto", "no", "bf16", "fp16")


@dataclass
class KDSettings:
    max_steps: int = 20
    batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float = 5e-5
    divergence: str = "forward_kl"  # forward_kl | reverse_kl | jsd | skew_kl (top-k targets)
    beta: float = 0.5
    alpha: float = 0.1
    temperature: float = 1.0
    k: int = 20
    mode: str = "topk"  # topk | sampled (the teacher pass's mode)
    max_length: int = 512
    chunk_size: int = 1024
    seed: int = 0
    mixed_precision: str = "auto"  # auto (accelerate launch's choice, else no) | no | bf16 | fp16
    save_steps: int = 50  # a resumable checkpoint every N steps (0: none); the latest one is kept
    speed: str = "auto"  # auto | fast | plain | cpu (train/fast.py): fast on CUDA, cpu elsewhere


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


def _kd_student(model, settings: KDSettings):
    """`model` wrapped so that its forward returns one micro-batch's (summed KD loss, target tokens).

    The chunked loss reads the LM head's weight directly; running it inside the forward of the
    module given to `accelerator.prepare` keeps every parameter use within that forward, where
    DDP syncs and FSDP / DeepSpeed ZeRO-3 gather parameters.
    """
    import torch

    from train.kd_losses import kd_loss, sampled_kd_loss

    class KDStudent(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.student = model

        def forward(self, input_ids, attention_mask, rows, cols, t_ids, t_values):
            hidden = self.student.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            h = hidden[rows, cols]
            head = self.student.get_output_embeddings()
            if settings.mode == "sampled":
                return sampled_kd_loss(h, head.weight, t_ids, t_values, lm_head_bias=head.bias,
                                       temperature=settings.temperature, chunk_size=settings.chunk_size)
            return kd_loss(h, head.weight, t_ids, t_values, lm_head_bias=head.bias, divergence=settings.divergence,
                           beta=settings.beta, alpha=settings.alpha, temperature=settings.temperature,
                           chunk_size=settings.chunk_size)

    return KDStudent()


def _inputs(batch: list[dict], device) -> dict:
    """The padded token ids of a micro-batch and its targets, as KDStudent.forward takes them."""
    import torch

    width = max(len(e["input_ids"]) for e in batch)
    input_ids = torch.tensor([e["input_ids"] + [0] * (width - len(e["input_ids"])) for e in batch])
    mask = torch.tensor([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in batch])
    # Hidden state at position t predicts token t + 1: the completion positions of each row, in order.
    rows = torch.cat([torch.full((len(e["input_ids"]) - e["n_prompt"],), i) for i, e in enumerate(batch)])
    cols = torch.cat([torch.arange(e["n_prompt"] - 1, len(e["input_ids"]) - 1) for e in batch])
    t_ids = torch.from_numpy(np.concatenate([e["t_ids"] for e in batch]))
    t_values = torch.from_numpy(np.concatenate([e["t_values"] for e in batch]))
    tensors = dict(input_ids=input_ids, attention_mask=mask, rows=rows, cols=cols, t_ids=t_ids, t_values=t_values)
    return {k: v.to(device) for k, v in tensors.items()}


def _accelerator(settings: KDSettings, speed: Speed):
    import os

    from accelerate import Accelerator

    if settings.save_steps < 0:
        raise DistillError(f"save_steps={settings.save_steps}: use 0 (no checkpoints) or a positive step count")
    if settings.mixed_precision not in MIXED_PRECISION:
        raise DistillError(f"unknown mixed_precision {settings.mixed_precision!r}: use {', '.join(MIXED_PRECISION)}")
    # None: what `accelerate launch` was given (flag or config profile), else "no".
    mixed = None if settings.mixed_precision == "auto" else settings.mixed_precision
    if mixed is None and speed.bf16 and "ACCELERATE_MIXED_PRECISION" not in os.environ:
        mixed = "bf16"  # the fast path's autocast, unless `accelerate launch` chose one
    try:
        return Accelerator(gradient_accumulation_steps=settings.grad_accum, mixed_precision=mixed)
    except ValueError as e:  # e.g. fp16 without a GPU
        raise DistillError(f"mixed_precision={settings.mixed_precision}: {str(e).splitlines()[0]}") from None


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
    accelerator = _accelerator(settings, speed)
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
    kd = _kd_student(load_student(str(student_dir), speed), settings).train()
    optimizer = torch.optim.AdamW(kd.parameters(), lr=settings.learning_rate)
    kd, optimizer = accelerator.prepare(kd, optimizer)
    world, rank = accelerator.num_processes, accelerator.process_index
    width = settings.batch_size * world  # rows of one micro-batch over all processes
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
        # Normalised by the target tokens of the whole accumulated step on all processes (trl #4719).
        # accelerator.backward divides by grad_accum and DDP averages over processes: both undone here.
        total = sum(len(e["input_ids"]) - e["n_prompt"] for b in micro for e in b)
        scale = settings.grad_accum * world / total
        step_loss = torch.zeros((), device=accelerator.device)
        for batch in micro:
            with accelerator.accumulate(kd):
                loss_sum, _ = kd(**_inputs(batch[rank::world], accelerator.device))
                accelerator.backward(loss_sum * scale)
                step_loss += loss_sum.detach() / total
                if accelerator.sync_gradients:  # the last micro-batch: clip as TRL's trainers do (1.0)
                    accelerator.clip_grad_norm_(kd.parameters(), 1.0)
                optimizer.step()  # a no-op until the last micro-batch of the step
                optimizer.zero_grad(set_to_none=True)
        losses.append(accelerator.reduce(step_loss, "sum").item())
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
