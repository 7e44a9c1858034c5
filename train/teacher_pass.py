"""The teacher pass of offline logit KD: score exported traces with a teacher, keep its log-probs.

    python -m train.teacher_pass --store runs/s.duckdb --data runs/sft.jsonl --teacher smollm2-135m-instruct \
        --student smollm2-135m-instruct --k 20

Each SFT export row (its `messages` and its `sample_id` lineage column) is rendered with the
STUDENT's chat template and tokenised by the student's tokenizer: the teacher scores exactly
the token ids the student will train on (a teacher scoring its own template would bias its
log-probs, tinker-cookbook #796). Teacher and student must share a vocabulary; a mismatch is
refused. At every completion position the teacher's top-k log-probs (over its full vocabulary)
or `k` tokens sampled from it with their weights (unbiased, "Sparse Logit Sampling") are stored
per sample in `teacher_logprobs`, with tokenizer, template and token-id hashes. The teacher
then need not sit in GPU memory while the student trains. Resumable: scored samples are skipped.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from store.store import Store
from core.errors import DistillError
from train.common import read_records
from store.runs import recorded_run
from train.cli import run_script


def tokenizer_hash(tokenizer) -> str:
    """Vocabulary (token -> id) and special tokens: what must agree for ids to mean the same."""
    blob = json.dumps([sorted(tokenizer.get_vocab().items()), tokenizer.all_special_tokens])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def chat_template_hash(tokenizer) -> str:
    return hashlib.sha256((tokenizer.chat_template or "").encode()).hexdigest()[:16]


def tokens_hash(ids: list[int]) -> str:
    return hashlib.sha256(np.asarray(ids, np.int64).tobytes()).hexdigest()[:16]


def read_rows(data: str | Path) -> list[dict]:
    """SFT export rows (JSONL or Parquet) that carry `messages` and a `sample_id`."""
    data = Path(data)
    rows = [r for _, r in read_records(data, "export it with `distill curate --export sft`")]
    if not rows or "messages" not in rows[0] or "sample_id" not in rows[0]:
        raise DistillError(f"{data} needs `messages` and `sample_id` columns: export with `distill curate --export sft`")
    return rows


def encode(tokenizer, messages: list[dict], max_length: int) -> tuple[list[int], int]:
    """(token ids of the whole chat, number of prompt tokens): the completion is what is scored."""
    full = tokenizer.apply_chat_template(messages, tokenize=True)
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=True, add_generation_prompt=True)
    full, prompt = list(_ids(full)), list(_ids(prompt))
    if full[:len(prompt)] != prompt:
        raise DistillError("the chat template renders the prompt differently inside the whole chat: "
                           "cannot locate the completion tokens")
    return full[:max_length], min(len(prompt), max_length)


def _ids(encoded) -> list[int]:
    return encoded["input_ids"] if isinstance(encoded, dict) or hasattr(encoded, "keys") else encoded


def score_rows(teacher_model, encoded: list[tuple[list[int], int]], k: int, mode: str, seed: int) -> list[tuple]:
    """Per row: (ids (n, k) int32, logprobs-or-weights (n, k) float32) at its completion positions."""
    import torch

    width = max(len(ids) for ids, _ in encoded)
    pad = 0
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in encoded])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in encoded])
    with torch.no_grad():
        logits = teacher_model(input_ids=input_ids, attention_mask=mask).logits.float()
    gen = torch.Generator().manual_seed(seed)
    out = []
    for row, (ids, n_prompt) in enumerate(encoded):
        # logits at position t predict token t + 1: completion tokens n_prompt .. len-1.
        logprobs = torch.log_softmax(logits[row, n_prompt - 1:len(ids) - 1], dim=-1)
        if mode == "topk":
            values, top = logprobs.topk(min(k, logprobs.shape[-1]), dim=-1)
            out.append((top.to(torch.int32).numpy(), values.numpy()))
        else:  # k draws from the teacher per position: ids + weights (count / k), unbiased for forward KL
            draws = torch.multinomial(logprobs.exp(), k, replacement=True, generator=gen)
            uniq = [torch.unique(d, return_counts=True) for d in draws]
            ids_k = np.full((len(draws), k), -1, np.int32)
            weights = np.zeros((len(draws), k), np.float32)
            for i, (u, c) in enumerate(uniq):
                ids_k[i, :len(u)], weights[i, :len(u)] = u.numpy(), (c.float() / k).numpy()
            out.append((ids_k, weights))
    return out


def teacher_pass(store: Store, data: str | Path, teacher: str, student: str, run_id: str, k: int = 20,
                 mode: str = "topk", batch_size: int = 8, max_length: int = 512, seed: int = 0) -> dict:
    """Write the teacher's targets for every export row not scored yet; returns counts and bytes/token."""
    if mode not in ("topk", "sampled"):
        raise DistillError(f"unknown mode {mode!r}: use topk or sampled")
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from clients.models import model_path

    student_tok = AutoTokenizer.from_pretrained(model_path(student))
    teacher_dir = model_path(teacher)
    teacher_tok = AutoTokenizer.from_pretrained(teacher_dir)
    if tokenizer_hash(student_tok) != tokenizer_hash(teacher_tok):
        raise DistillError(f"teacher {teacher} and student {student} have different vocabularies: offline logit KD "
                           "needs a shared tokenizer (use on-policy distillation or SFT across tokenizers)")
    rows = read_rows(data)
    done = store.teacher_logprob_keys(teacher, mode, k)
    todo = [r for r in rows if r["sample_id"] not in done]
    if not todo:
        return {"rows": len(rows), "scored": 0, "already_there": len(rows)}
    model = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    t_hash, tok_hash = chat_template_hash(student_tok), tokenizer_hash(student_tok)
    positions = nbytes = 0
    bar = tqdm(total=len(todo), desc=f"teacher pass ({teacher})", unit="row")
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        encoded = [encode(student_tok, r["messages"], max_length) for r in chunk]
        scored = score_rows(model, encoded, k, mode, seed + start)
        records = []
        for r, (ids, n_prompt), (top_ids, values) in zip(chunk, encoded, scored):
            records.append(dict(sample_id=r["sample_id"], teacher=teacher, mode=mode, k=k, tokenizer_hash=tok_hash,
                                template_hash=t_hash, tokens_hash=tokens_hash(ids), prompt_tokens=n_prompt,
                                positions=len(top_ids), ids=top_ids.tobytes(), logprobs=values.tobytes(),
                                run_id=run_id))
            positions, nbytes = positions + len(top_ids), nbytes + top_ids.nbytes + values.nbytes
        store.add_teacher_logprobs(records)  # one transaction per batch: a kill loses at most one batch
        bar.update(len(chunk))
    bar.close()
    return {"rows": len(rows), "scored": len(todo), "already_there": len(rows) - len(todo), "positions": positions,
            "bytes_per_token": round(nbytes / max(1, positions), 1)}


def load_targets(row: dict) -> tuple[np.ndarray, np.ndarray]:
    """(ids (n, k) int32, values (n, k) float32) of one stored row."""
    ids = np.frombuffer(row["ids"], np.int32).reshape(row["positions"], row["k"])
    values = np.frombuffer(row["logprobs"], np.float32).reshape(row["positions"], row["k"])
    return ids, values


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True)
    parser.add_argument("--data", required=True, help="SFT export (JSONL or Parquet) with sample_id lineage")
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", required=True, help="whose tokenizer and chat template render the text")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--mode", choices=["topk", "sampled"], default="topk")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    args = parser.parse_args(argv)
    with recorded_run(args.store, "train-teacher-pass", vars(args)) as run, Store(args.store) as store:
        out = teacher_pass(store, args.data, args.teacher, args.student, run.run_id, args.k, args.mode,
                           args.batch_size, args.max_length)
        run.summary = dict(out, cached=out["scored"] == 0)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    run_script(main)
