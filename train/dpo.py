"""Preference training (DPO) of a student on exported pairs, with TRL's DPOTrainer.

    python -m train.dpo --data runs/demo/pairs.jsonl --student smollm2-135m-instruct \
        --output runs/demo/dpo --max-steps 20

The export (`distill pairs` / `distill curate --export dpo`, JSONL or Parquet) holds TRL's
conversational `prompt` / `chosen` / `rejected` message lists plus lineage columns
(prompt_id, chosen_sample_id, rejected_sample_id, margin, strategy, teacher, ...); only the
three TRL columns reach the trainer. The reference model is a frozen copy of the starting
student (TRL builds it when `ref_model` is None). A finished run (same data, same student,
same settings) is found by its content hash and not trained again; a killed one resumes
from its last checkpoint.
"""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from core.errors import DistillError
from store.runs import Run, is_main_process, recorded_run
from train.common import (fingerprint, cached_summary, checkpoint_root, publish, read_records, training_tokenizer,
                          record_summary)
from train.cli import add_settings, run_script, settings_from, trainer_parser
from train.fast import Speed, load_frozen, load_student, resolve_speed, trainer_arguments

PAIR_COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class DPOSettings:
    max_steps: int = 20
    batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float = 5e-6
    beta: float = 0.1
    max_length: int = 512
    seed: int = 0
    loss_type: str = "sigmoid"  # any TRL DPO loss: sigmoid, ipo, hinge, robust, apo_zero, ...
    speed: str = "auto"  # auto | fast | plain | cpu (train/fast.py): fast on CUDA, cpu elsewhere


def _read_pairs(data: Path) -> list[dict]:
    """The pairs file's prompt/chosen/rejected columns as rows; lineage columns are dropped."""
    rows = []
    for where, record in read_records(data, "export it with `distill pairs` or `distill curate --export dpo`"):
        missing = [c for c in PAIR_COLUMNS if c not in record]
        if missing:
            raise DistillError(f"{where} has no {'/'.join(missing)} column: export DPO pairs "
                               "with `distill curate --export dpo`")
        rows.append({c: record[c] for c in PAIR_COLUMNS})
    if not rows:
        raise DistillError(f"{data} has no preference pairs: run `distill pairs` first")
    return rows


def _log_series(log_history: list[dict], key: str) -> list[float]:
    return [log[key] for log in log_history if key in log]


def dpo_config(settings: DPOSettings, speed: Speed, checkpoints: str | Path):
    """The DPOConfig `distill train dpo` trains with: the settings plus speed's configuration (train/fast.py)."""
    from trl import DPOConfig

    try:
        return DPOConfig(
            output_dir=str(checkpoints), max_steps=settings.max_steps,
            per_device_train_batch_size=settings.batch_size, gradient_accumulation_steps=settings.grad_accum,
            learning_rate=settings.learning_rate, beta=settings.beta, loss_type=[settings.loss_type],
            max_length=settings.max_length, seed=settings.seed,
            logging_steps=1, save_strategy="steps", save_steps=max(5, settings.max_steps // 4), save_total_limit=1,
            report_to="none", dataloader_num_workers=0,
            lr_scheduler_type="constant_with_warmup", warmup_steps=min(2, settings.max_steps),
            **trainer_arguments(speed),
        )
    except ValueError as e:  # e.g. a loss that needs extra settings (exo_pair without label smoothing)
        raise DistillError(f"invalid DPO settings: {e}") from None


def train_dpo(data: str | Path, student: str, output_dir: str | Path,
              settings: DPOSettings = DPOSettings(), run: Run | None = None) -> dict:
    """DPO-train `student` on a prompt/chosen/rejected export; returns losses, reward stats and the model dir.

    `run`, when given, receives the trainer's resolved config for the run record in the store.
    """
    data, output_dir = Path(data), Path(output_dir)
    rows = _read_pairs(data)
    speed = resolve_speed(settings.speed)
    final_dir = output_dir / f"dpo-{fingerprint(data, student, replace(settings, speed=speed.name))}"
    cached = cached_summary(final_dir)
    if cached:
        return cached

    # Heavy imports stay here so `distill --help` is instant.
    from datasets import Dataset
    from trl import DPOTrainer

    model_dir, tokenizer = training_tokenizer(student)
    dataset = Dataset.from_list(rows)
    checkpoints = checkpoint_root(final_dir)
    config = dpo_config(settings, speed, checkpoints)
    if run:
        run.add_config(trainer=config.to_dict(), speed=speed.as_dict())
    try:
        # Plain: ref_model=None, TRL loads a second frozen copy of the student. Otherwise the reference is
        # the same weights loaded frozen in speed's configuration (bf16 and compiled on the fast path).
        ref = None if speed.name == "plain" else load_frozen(str(model_dir), speed)
        student_model = str(model_dir) if speed.name == "plain" else load_student(str(model_dir), speed)
        trainer = DPOTrainer(model=student_model, ref_model=ref, args=config, train_dataset=dataset,
                             processing_class=tokenizer)
    except (ValueError, NotImplementedError) as e:
        if settings.loss_type in str(e) or "loss" in str(e):
            raise DistillError(f"unsupported loss_type '{settings.loss_type}': {str(e).splitlines()[0]}") from None
        raise
    if len(trainer.train_dataset) == 0:
        raise DistillError(f"every prompt in {data} is longer than max_length={settings.max_length}: raise --max-length")
    # Resume from the last checkpoint so a killed training run continues instead of restarting.
    has_checkpoint = checkpoints.exists() and any(checkpoints.glob("checkpoint-*"))
    result = trainer.train(resume_from_checkpoint=True if has_checkpoint else None)
    history = trainer.state.log_history
    losses = _log_series(history, "loss")
    margins = _log_series(history, "rewards/margins")
    accuracies = _log_series(history, "rewards/accuracies")
    tmp_dir = final_dir.with_name(final_dir.name + ".tmp")
    if is_main_process():
        shutil.rmtree(tmp_dir, ignore_errors=True)
    trainer.save_model(str(tmp_dir))
    tokenizer.padding_side = "left"
    summary = {"model_dir": str(final_dir), "student": student, "rows": len(rows),
               "rows_used": len(trainer.train_dataset), "steps": result.global_step,
               "first_loss": losses[0] if losses else math.nan, "last_loss": losses[-1] if losses else math.nan,
               "losses": losses, "reward_margins": margins, "reward_accuracies": accuracies,
               "rewards_chosen": _log_series(history, "rewards/chosen"),
               "rewards_rejected": _log_series(history, "rewards/rejected"),
               "last_reward_margin": margins[-1] if margins else math.nan,
               "last_reward_accuracy": accuracies[-1] if accuracies else math.nan,
               "train_runtime_s": result.metrics.get("train_runtime"), "settings": asdict(settings)}
    return publish(tmp_dir, final_dir, summary, tokenizer)


def main(argv: list[str] | None = None) -> None:
    parser = trainer_parser(__doc__, "prompt/chosen/rejected JSONL or Parquet from `distill pairs`", "runs/dpo")
    add_settings(parser, DPOSettings)
    args = parser.parse_args(argv)
    settings = settings_from(args, DPOSettings)
    skip = ("losses", "reward_margins", "reward_accuracies", "rewards_chosen", "rewards_rejected")
    with recorded_run(args.store, "train-dpo", vars(args)) as run:
        summary = train_dpo(args.data, args.student, args.output, settings, run=run)
        record_summary(run, {k: v for k, v in summary.items() if k not in skip})
    print(json.dumps(run.summary, indent=1))


if __name__ == "__main__":
    run_script(main)
