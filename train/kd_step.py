"""Offline logit KD's model, batches and optimizer step (train/logit_kd.py runs them in its loop).

Kept apart from the loop so that it imports neither the store nor duckdb: bench/train_throughput.py
times exactly this step on the GPU machine, which has torch and transformers but not the store.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import DistillError
from train.fast import Speed

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


def kd_student(model, settings: KDSettings):
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


def kd_inputs(batch: list[dict], device) -> dict:
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


def kd_accelerator(settings: KDSettings, speed: Speed):
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


def kd_train_step(accelerator, kd, optimizer, micro: list[list[dict]]):
    """One optimizer step over `micro` (grad_accum micro-batches, each the rows of all processes; this
    process trains on its slice). Returns the step's loss, summed over processes.

    Normalised by the target tokens of the whole accumulated step on all processes (trl #4719):
    accelerator.backward divides by grad_accum and DDP averages over processes, both undone here."""
    import torch

    world, rank = accelerator.num_processes, accelerator.process_index
    total = sum(len(e["input_ids"]) - e["n_prompt"] for b in micro for e in b)
    scale = len(micro) * world / total
    step_loss = torch.zeros((), device=accelerator.device)
    for batch in micro:
        with accelerator.accumulate(kd):
            loss_sum, _ = kd(**kd_inputs(batch[rank::world], accelerator.device))
            accelerator.backward(loss_sum * scale)
            step_loss += loss_sum.detach() / total
            if accelerator.sync_gradients:  # the last micro-batch: clip as TRL's trainers do (1.0)
                accelerator.clip_grad_norm_(kd.parameters(), 1.0)
            optimizer.step()  # a no-op until the last micro-batch of the step
            optimizer.zero_grad(set_to_none=True)
    return accelerator.reduce(step_loss, "sum")
