"""What every training entry point shares: the cached result dir, the data reader, the tokenizer,
and the run record in the store. Flags live in train/cli.py."""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from core.errors import DistillError
from store.runs import Run


def cached_summary(final_dir: Path) -> dict | None:
    """A finished run's summary (same data, same settings): returned instead of training again."""
    path = final_dir / "train_summary.json"
    return dict(json.loads(path.read_text()), cached=True) if path.exists() else None


def publish(tmp_dir: Path, final_dir: Path, summary: dict, tokenizer: Any = None) -> dict:
    """Write the tokenizer and summary into the finished model dir and move it into place in one
    rename. Under `accelerate launch` only the main process writes; the others wait for it."""
    from store.runs import is_main_process

    if is_main_process():
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp_dir))
        (tmp_dir / "train_summary.json").write_text(json.dumps(summary, indent=1))
        if final_dir.exists():
            shutil.rmtree(final_dir)
        tmp_dir.replace(final_dir)
    _barrier()
    return dict(summary, cached=False)


def _barrier() -> None:
    """Wait for every process of a distributed run (no-op in one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def read_records(data: Path, missing_hint: str) -> list[tuple[str, dict]]:
    """(where, record) for every row of a JSONL or Parquet export; `where` names the line for errors."""
    if not data.exists():
        raise DistillError(f"training data {data} not found: {missing_hint}")
    if data.suffix == ".parquet":
        import pyarrow.parquet as pq

        return [(f"{data} row {n}", r) for n, r in enumerate(pq.read_table(data).to_pylist(), 1)]
    records = []
    with data.open() as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise DistillError(f"{data} line {n} is not JSON: use JSONL or .parquet") from None
            if not isinstance(record, dict):
                raise DistillError(f"{data} line {n} is not a JSON object")
            records.append((f"{data} line {n}", record))
    return records


def training_tokenizer(student: str):
    """(model dir, tokenizer padded on the right with a pad token) of a registry name, path or HF id."""
    from transformers import AutoTokenizer

    from clients.models import model_path

    model_dir = model_path(student)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model_dir, tokenizer


def checkpoint_root(final_dir: str | Path) -> Path:
    """Where a run keeps its checkpoint-N dirs until (and, for TRL's trainers, after) the final model:
    <output>/checkpoints/<final name>."""
    final_dir = Path(final_dir)
    return final_dir.parent / "checkpoints" / final_dir.name


def checkpoint_dirs(final_dir: str | Path) -> list[str]:
    """A run's checkpoints in step order, then the final model dir."""
    final_dir = Path(final_dir)
    saved = checkpoint_root(final_dir).glob("checkpoint-*")
    # (length, name) sorts checkpoint-5 before checkpoint-10.
    return [str(p) for p in sorted(saved, key=lambda p: (len(p.name), p.name))] + [str(final_dir)]


def record_summary(run: Run, summary: dict) -> None:
    """What a training run records: its summary with the checkpoint dirs listed after the final
    model's, and the trainer's own runtime next to the wall time."""
    if summary.get("model_dir"):
        summary = dict(summary, checkpoints=checkpoint_dirs(summary["model_dir"]))
    run.summary = summary
    run.timings["train_runtime_s"] = summary.get("train_runtime_s")


def fingerprint(data: Path, student: str, settings: Any) -> str:
    """Name of a finished model dir: the data bytes, the student and every setting."""
    h = hashlib.sha256(data.read_bytes())
    h.update(json.dumps([student, asdict(settings)], sort_keys=True).encode())
    return h.hexdigest()[:12]
