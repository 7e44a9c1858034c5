"""Offline logit KD: train a student on teacher log-probs stored by the teacher pass.

    python -m train.teacher_pass --store S --data runs/sft.jsonl --teacher T --student STUDENT --k 20
    python -m train.logit_kd --store S --data runs/sft.jsonl --teacher T --student STUDENT --max-steps 50

TRL has no trainer for cached teacher log-probs (trl #2255, #3055), so this is ours: a plain
PyTorch loop (AdamW, gradient accumulation) whose loss is train/kd_losses.py on the student's
final hidden states at the completion positions, chunked so the full-vocabulary logits are never
materialised. Targets are matched to rows by sample id (never by step), and refused when the
student's tokenisation of a row differs from the one the teacher scored (token-id hash). Each
accumulated step is normalised by the target tokens of all its micro-batches (trl #4719).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from curation.store import Store
from distill.errors import DistillError
from train.teacher_pass import encode, load_targets, read_rows, tokenizer_hash, tokens_hash
from train.common import add_settings, cached_summary, publish, run_script, settings_from


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


def _micro_batch(model, batch: list[dict], settings: KDSettings):
    """(summed loss, target tokens) of one micro-batch."""
    import torch

    from train.kd_losses import kd_loss, sampled_kd_loss

    width = max(len(e["input_ids"]) for e in batch)
    input_ids = torch.tensor([e["input_ids"] + [0] * (width - len(e["input_ids"])) for e in batch])
    mask = torch.tensor([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in batch])
    hidden = model.get_decoder()(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device)).last_hidden_state
    # Hidden state at position t predicts token t + 1: the completion positions of each row, in order.
    rows = torch.cat([torch.full((len(e["input_ids"]) - e["n_prompt"],), i) for i, e in enumerate(batch)])
    cols = torch.cat([torch.arange(e["n_prompt"] - 1, len(e["input_ids"]) - 1) for e in batch])
    h = hidden[rows.to(hidden.device), cols.to(hidden.device)]
    t_ids = torch.from_numpy(np.concatenate([e["t_ids"] for e in batch])).to(h.device)
    t_values = torch.from_numpy(np.concatenate([e["t_values"] for e in batch])).to(h.device)
    head = model.get_output_embeddings()
    if settings.mode == "sampled":
        return sampled_kd_loss(h, head.weight, t_ids, t_values, lm_head_bias=head.bias,
                               temperature=settings.temperature, chunk_size=settings.chunk_size)
    return kd_loss(h, head.weight, t_ids, t_values, lm_head_bias=head.bias, divergence=settings.divergence,
                   beta=settings.beta, alpha=settings.alpha, temperature=settings.temperature,
                   chunk_size=settings.chunk_size)


def train_logit_kd(store: Store, data: str | Path, teacher: str, student: str, output_dir: str | Path,
                   settings: KDSettings = KDSettings()) -> dict:
    """Train `student` on the stored targets of `teacher` for an SFT export; returns losses and the model dir."""
    import hashlib

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from synth.models import model_path

    student_dir = model_path(student)
    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    examples = build_examples(store, data, teacher, tokenizer, settings)
    key = hashlib.sha256(Path(data).read_bytes() + json.dumps([teacher, student, asdict(settings)]).encode())
    final_dir = Path(output_dir) / f"kd-student-{key.hexdigest()[:12]}"
    cached = cached_summary(final_dir)
    if cached:
        return cached
    torch.manual_seed(settings.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(student_dir).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate)
    order, rng, losses, began = [], random.Random(settings.seed), [], time.perf_counter()
    for step in range(settings.max_steps):
        micro = []
        for _ in range(settings.grad_accum):
            if len(order) < settings.batch_size:
                order += rng.sample(range(len(examples)), len(examples))
            micro.append([examples[i] for i in order[:settings.batch_size]])
            del order[:settings.batch_size]
        total = sum(len(e["input_ids"]) - e["n_prompt"] for b in micro for e in b)
        step_loss = 0.0
        for batch in micro:
            loss_sum, _ = _micro_batch(model, batch, settings)
            (loss_sum / total).backward()  # normalised by the whole accumulated step's tokens
            step_loss += loss_sum.item() / total
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as TRL's trainers do (max_grad_norm 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(step_loss)
    tmp = final_dir.with_name(final_dir.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    summary = {"model_dir": str(final_dir), "student": student, "teacher": teacher, "rows": len(examples),
               "steps": settings.max_steps, "first_loss": losses[0] if losses else math.nan,
               "last_loss": losses[-1] if losses else math.nan, "losses": losses,
               "train_runtime_s": time.perf_counter() - began, "settings": asdict(settings)}
    return publish(tmp, final_dir, summary)


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
    with Store(args.store) as store:
        summary = train_logit_kd(store, args.data, args.teacher, args.student, args.output, settings)
    print(json.dumps({k: v for k, v in summary.items() if k != "losses"}, indent=1))


if __name__ == "__main__":
    run_script(main)
