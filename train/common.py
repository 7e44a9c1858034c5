"""What every training entry point shares: settings flags, the cached result dir, the CLI error line,
and the run record in the store."""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

from distill.errors import DistillError


def add_settings(parser: argparse.ArgumentParser, settings_cls: type) -> None:
    """One `--flag` per settings field, typed and defaulted from the dataclass."""
    for name, value in asdict(settings_cls()).items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)


def trainer_parser(doc: str, data_help: str, output_default: str) -> argparse.ArgumentParser:
    """The flags every TRL-trainer script shares: --data, --student, --output, --store."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help=data_help)
    parser.add_argument("--student", default="smollm2-135m-instruct", help="registry name, path or HF id")
    parser.add_argument("--output", default=output_default, help="where checkpoints and the model go")
    parser.add_argument("--store", default=None, help="DuckDB store to record the run in (config, checkpoints, loss)")
    return parser


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


# A run's config is readable by anyone with the store: drop what looks like a credential. Names
# cannot tell a tokenizer's pad_token from a hub_token, so every `*_token` key goes.
SECRET_KEY = re.compile(r"(^|_)(api_?key|secret|password|passwd|credentials?|token|auth)($|_)", re.IGNORECASE)
SECRET_VALUE = re.compile(r"^(sk-|hf_|ghp_|github_pat_|xox[abp]-)[A-Za-z0-9_-]{16,}$")


def public_config(value: Any) -> Any:
    """`value` (dicts and lists, nested) without secret-looking keys or provider-key-shaped strings."""
    if isinstance(value, dict):
        return {k: public_config(v) for k, v in value.items()
                if not SECRET_KEY.search(str(k)) and not _secret_value(v)}
    if isinstance(value, (list, tuple)):
        return [public_config(v) for v in value if not _secret_value(v)]
    return value


def _secret_value(value: Any) -> bool:
    return isinstance(value, str) and bool(SECRET_VALUE.match(value))


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


def is_main_process() -> bool:
    """False in the 2nd.. processes of `accelerate launch` / torchrun (they set RANK)."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class TrainingRun:
    """What a training command records: its config (trainers add the config they resolve) and,
    once it succeeds, its summary (`cached: True` in it marks a reused result)."""
    config: dict
    run_id: str | None = None
    summary: dict = field(default_factory=dict)

    def add_config(self, **parts: Any) -> None:
        self.config.update(public_config(parts))


@contextmanager
def recorded_run(store_path: str | Path | None, stage: str, config: dict) -> Iterator[TrainingRun]:
    """Record the enclosed training as a run of `stage` in the store at `store_path` (None: no record).

    The run is started before training and finished after it: status done, cached or failed (the
    error is re-raised), with the summary, its checkpoint dirs and timings. The store is opened
    only for those two writes, not held while training, so other commands can use it meanwhile;
    under `accelerate launch` only the main process writes.
    """
    run = TrainingRun(public_config(dict(config)))
    if store_path is None or not is_main_process():
        yield run
        return
    from curation.store import Store

    with Store(store_path) as store:
        run.run_id = store.start_run(stage, run.config)
    began = time.perf_counter()
    try:
        yield run
    except BaseException as err:
        _finish(store_path, run, "failed", {"error": f"{type(err).__name__}: {err}"[:1000]}, began)
        raise
    summary = dict(run.summary)
    if summary.get("model_dir"):
        summary["checkpoints"] = checkpoint_dirs(summary["model_dir"])
    _finish(store_path, run, "cached" if summary.get("cached") else "done", summary, began)


def _finish(store_path: str | Path, run: TrainingRun, status: str, summary: dict, began: float) -> None:
    from curation.store import Store

    timings = {"wall_s": round(time.perf_counter() - began, 3), "train_runtime_s": summary.get("train_runtime_s")}
    with Store(store_path) as store:
        store.finish_run(run.run_id, status, timings, summary=summary, config=run.config)
