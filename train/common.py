"""What every training entry point shares: settings flags, the cached result dir, the CLI error line."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Callable

from distill.errors import DistillError


def add_settings(parser: argparse.ArgumentParser, settings_cls: type) -> None:
    """One `--flag` per settings field, typed and defaulted from the dataclass."""
    for name, value in asdict(settings_cls()).items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)


def settings_from(args: argparse.Namespace, settings_cls: type) -> Any:
    return settings_cls(**{f.name: getattr(args, f.name) for f in fields(settings_cls)})


def cached_summary(final_dir: Path) -> dict | None:
    """A finished run's summary (same data, same settings): returned instead of training again."""
    path = final_dir / "train_summary.json"
    return dict(json.loads(path.read_text()), cached=True) if path.exists() else None


def publish(tmp_dir: Path, final_dir: Path, summary: dict) -> dict:
    """Write the summary into the finished model dir and move it into place in one rename."""
    (tmp_dir / "train_summary.json").write_text(json.dumps(summary, indent=1))
    if final_dir.exists():
        shutil.rmtree(final_dir)
    tmp_dir.replace(final_dir)
    return dict(summary, cached=False)


def run_script(main: Callable[[], None]) -> None:
    """`python -m train.x`: a user mistake is one `error:` line and exit code 2, as in `distill`."""
    try:
        main()
    except DistillError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


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

    from synth.models import model_path

    model_dir = model_path(student)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model_dir, tokenizer
