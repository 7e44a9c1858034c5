"""Supervised fine-tuning of a student on exported traces, with TRL's SFTTrainer.

    python -m train.sft --data runs/demo/sft.jsonl --student smollm2-135m-instruct \
        --output runs/demo/student --max-steps 20

The export is TRL's conversational `messages` format. By default it is split into
prompt/completion so TRL computes the loss on the assistant turn only (the student should
learn to reason and answer, not to reproduce the question). A plain `prompt` / `completion`
JSONL (text, e.g. the evaluator's own prompt format) is trained on the completion only. A finished run (same data,
same settings) is found by its content hash and not trained again.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from core.errors import DistillError
from store.runs import Run, recorded_run
from train.common import (fingerprint, cached_summary, checkpoint_root, publish, training_tokenizer,
                          record_summary)
from train.cli import add_settings, run_script, settings_from, trainer_parser
from train.fast import Speed, load_student, resolve_speed, sft_arguments, trainer_arguments


@dataclass
class SFTSettings:
    max_steps: int = 20
    batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float = 5e-5
    max_length: int = 384
    seed: int = 0
    loss_on: str = "assistant"  # "assistant" (prompt/completion) or "all" (whole conversation)
    speed: str = "auto"  # auto | fast | plain | cpu (train/fast.py): fast on CUDA, cpu elsewhere


def sft_config(settings: SFTSettings, speed: Speed, checkpoints: str | Path):
    """The SFTConfig `distill train sft` trains with: the settings plus speed's configuration
    (train/fast.py). bench/train_throughput.py builds its "ours" arm from the same pieces."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(checkpoints), max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size, gradient_accumulation_steps=settings.grad_accum,
        learning_rate=settings.learning_rate, max_length=settings.max_length, seed=settings.seed,
        logging_steps=1, save_strategy="steps", save_steps=max(5, settings.max_steps // 4), save_total_limit=1,
        report_to="none", dataloader_num_workers=0,
        lr_scheduler_type="constant_with_warmup", warmup_steps=min(2, settings.max_steps),
        **trainer_arguments(speed), **sft_arguments(speed, settings.max_length),
    )


def train_sft(data: str | Path, student: str, output_dir: str | Path,
              settings: SFTSettings = SFTSettings(), run: Run | None = None) -> dict:
    """Train `student` on a messages-format JSONL; returns losses, timing and the model dir.

    `run`, when given, receives the trainer's resolved config for the run record in the store.
    """
    data, output_dir = Path(data), Path(output_dir)
    if not data.exists():
        raise DistillError(f"training data {data} not found: run `distill curate` to export it")
    if settings.loss_on not in ("assistant", "all"):
        raise DistillError(f"unknown loss_on '{settings.loss_on}': use 'assistant' or 'all'")
    speed = resolve_speed(settings.speed)
    final_dir = output_dir / f"student-{fingerprint(data, student, replace(settings, speed=speed.name))}"
    cached = cached_summary(final_dir)
    if cached:
        return cached

    # Heavy imports stay here so `distill --help` is instant.
    from datasets import load_dataset
    from trl import SFTTrainer

    model_dir, tokenizer = training_tokenizer(student)
    dataset = load_dataset("json", data_files=str(data), split="train")
    plain = {"prompt", "completion"} <= set(dataset.column_names)  # TRL's prompt-completion format
    if "messages" not in dataset.column_names and not plain:
        raise DistillError(f"{data} has neither a 'messages' column nor 'prompt' and 'completion' columns: "
                           "export with `distill curate`")
    if plain:  # plain-text prompts (the evaluator's few-shot format): the loss is on the completion only
        dataset = dataset.select_columns(["prompt", "completion"])
    elif settings.loss_on == "assistant":
        dataset = dataset.map(lambda ex: {"prompt": ex["messages"][:-1], "completion": ex["messages"][-1:]},
                              remove_columns=dataset.column_names)
    checkpoints = checkpoint_root(final_dir)
    config = sft_config(settings, speed, checkpoints)
    if run:
        run.add_config(trainer=config.to_dict(), speed=speed.as_dict())
    student_model = str(model_dir) if speed.name == "plain" else load_student(str(model_dir), speed)
    trainer = SFTTrainer(model=student_model, args=config, train_dataset=dataset, processing_class=tokenizer)
    if len(trainer.train_dataset) == 0:
        raise DistillError(f"no row of {data} fits max_length={settings.max_length} once its prompt is "
                           "tokenised: raise --max-length")
    # Resume from the last checkpoint so a killed training run continues instead of restarting.
    has_checkpoint = checkpoints.exists() and any(checkpoints.glob("checkpoint-*"))
    result = trainer.train(resume_from_checkpoint=True if has_checkpoint else None)
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    tmp_dir = final_dir.with_name(final_dir.name + ".tmp")
    trainer.save_model(str(tmp_dir))
    tokenizer.padding_side = "left"
    summary = {"model_dir": str(final_dir), "student": student, "rows": len(dataset),
               "steps": result.global_step, "first_loss": losses[0] if losses else math.nan,
               "last_loss": losses[-1] if losses else math.nan, "losses": losses,
               "train_runtime_s": result.metrics.get("train_runtime"), "settings": asdict(settings)}
    return publish(tmp_dir, final_dir, summary, tokenizer)


def main(argv: list[str] | None = None) -> None:
    parser = trainer_parser(__doc__, "messages-format JSONL from `distill curate`", "runs/student")
    add_settings(parser, SFTSettings)
    args = parser.parse_args(argv)
    settings = settings_from(args, SFTSettings)
    with recorded_run(args.store, "train-sft", vars(args)) as run:
        summary = train_sft(args.data, args.student, args.output, settings, run=run)
        record_summary(run, {k: v for k, v in summary.items() if k != "losses"})
    print(json.dumps(run.summary, indent=1))


if __name__ == "__main__":
    run_script(main)
