"""On-policy distillation of a student from a teacher, with TRL's DistillationTrainer.

    python -m train.onpolicy --data runs/demo/prompts.jsonl --student smollm2-135m-instruct \
        --teacher runs/demo/teacher --output runs/demo/onpolicy --max-steps 20
    python -m train.onpolicy --data runs/demo/sft.jsonl --student smollm2-135m-instruct \
        --self-distill --output runs/demo/selfdistill --max-steps 20
    # the teacher behind a server (`distill serve --model runs/demo/teacher --port 8000`, or vLLM):
    python -m train.onpolicy --data runs/demo/prompts.jsonl --student smollm2-135m-instruct \
        --teacher-url http://127.0.0.1:8000/v1 --beta 0 --teacher-top-k 20 --output runs/demo/onpolicy-http

The student samples completions for each prompt and is trained to match the teacher's
next-token distribution on them (generalized JSD: `beta` 0 = forward KL, 0.5 = JSD,
1 = reverse KL). Data is our prompt-only export (`prompt` message list, plus lineage
columns) or an SFT export (`messages`: all but the last turn are the prompt, the last
assistant turn is the verified trace), as JSONL or Parquet.

`lmbda` is the share of on-policy batches (GKD's lambda). TRL's stable DistillationTrainer
is purely on-policy, so for `lmbda < 1` a small subclass hook swaps, per generation batch
and with a seeded coin, the student's samples for the data's own completion (the SFT
export's last assistant turn); that needs an SFT export.

`--self-distill` (on-policy self-distillation): the teacher is a frozen copy of the
student's initial weights whose prompt also holds the verified trace as privileged
context, while the student sees only the question. TRL's experimental SDFTTrainer
(`teacher_model_kind="base"`, `privileged_context` column) implements exactly that and is
used as is. It is always on-policy, so `lmbda` must stay 1 there.

`--teacher-url`: the teacher runs behind `distill serve` or `vllm serve` and scores the
student's samples over HTTP (vLLM's `prompt_logprobs`, see train/server_teacher.py), through
TRL's experimental ServerDistillationTrainer. The server returns only the teacher's top-k
log-probs, so the loss is a sparse one: top-k forward KL (plus a tail bucket) for `--beta 0`,
top-1 generalized JSD otherwise (TRL supports no other). The served model must share the
student's vocabulary; plain OpenAI-style APIs cannot do this (chat `top_logprobs` scores
sampled text, not given token ids).

A finished run (same data, models and settings) is found by its content hash and not
trained again; a killed one resumes from its last checkpoint.
"""
from __future__ import annotations

import json
import math
import random
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from core.errors import DistillError
from store.runs import Run, is_main_process, recorded_run
from train.common import fingerprint, cached_summary, checkpoint_root, publish, read_records, record_summary
from train.cli import add_settings, run_script, settings_from, trainer_parser
from train.fast import Speed, load_frozen, load_student, resolve_speed, trainer_arguments
from train.fast_decode import PROMPT_BUCKET, static_decode_class, use_static_cache

TEACHER_TEMPLATE = ("{prompt}\n\nA verified solution, for reference only:\n{privileged_context}\n\n"
                    "Now answer the question yourself.")


@dataclass
class OnPolicySettings:
    max_steps: int = 20
    batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float = 1e-5
    beta: float = 0.5  # generalized JSD: 0 forward KL, 0.5 JSD, 1 reverse KL
    lmbda: float = 1.0  # share of generation batches sampled from the student (rest: the data's completion)
    temperature: float = 1.0
    max_new_tokens: int = 128
    max_length: int = 512  # prompt + completion tokens; longer prompts are dropped
    seed: int = 0
    speed: str = "auto"  # auto | fast | plain | cpu (train/fast.py): fast on CUDA, cpu elsewhere


def _content_text(message: dict) -> str:
    content = message.get("content", "")
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


def _to_row(record: dict, where: str) -> dict:
    """One export row as {prompt: messages, completion: assistant text or None}."""
    if record.get("prompt") is not None:
        prompt = record["prompt"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        completion = None
        extra = record.get("completion")
        if isinstance(extra, list) and extra:
            completion = _content_text(extra[-1])
        elif isinstance(extra, str) and extra:
            completion = extra
    elif record.get("messages") is not None:
        messages = list(record["messages"])
        if messages and messages[-1].get("role") == "assistant":
            prompt, completion = messages[:-1], _content_text(messages[-1])
        else:
            prompt, completion = messages, None
    else:
        raise DistillError(f"{where} has no prompt or messages column: export prompts with "
                           "`distill curate --export prompt` or traces with `distill curate`")
    if not prompt or not isinstance(prompt, list) or prompt[-1].get("role") != "user":
        raise DistillError(f"{where}: the prompt must be a message list ending with a user turn")
    prompt = [{"role": m["role"], "content": _content_text(m)} for m in prompt]
    return {"prompt": prompt, "completion": completion or None}


def _read_rows(data: Path) -> list[dict]:
    rows = []
    for where, record in read_records(data, "export it with `distill curate --export prompt` or `distill curate`"):
        if "prompt" not in record and "messages" not in record:
            raise DistillError(f"{where} has no prompt or messages column: export prompts with "
                               "`distill curate --export prompt` or traces with `distill curate`")
        rows.append(_to_row(record, where))
    if not rows:
        raise DistillError(f"{data} has no prompts: export some with `distill curate`")
    return rows


def _mixed_trainer_class(base):
    """DistillationTrainer plus GKD's lambda: some generation batches use the data's completions.

    The stable trainer has no off-policy share, and GKD (experimental) is an SFTTrainer that
    cannot run from a prompt-only export; this one hook keeps a single trainer for both.
    """

    class MixedPolicyDistillationTrainer(base):
        lmbda: float = 1.0

        def _generate_and_score_completions(self, inputs):
            self._batch_completions = [x.get("completion") for x in inputs]
            return super()._generate_and_score_completions(inputs)

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, has_tool_images=False):
            completions = getattr(self, "_batch_completions", None)
            # Seeded by step so a resumed run makes the same choices.
            coin = random.Random(f"{self.args.seed}:{self.state.global_step}").random()
            if not self.model.training:  # evaluation always samples from the student
                return super()._generate_single_turn(prompt_ids, images, multimodal_fields, has_tool_images)
            if self.lmbda >= 1.0 or coin < self.lmbda or not completions or None in completions:
                self._metrics["train"]["on_policy"].append(1.0)
                return super()._generate_single_turn(prompt_ids, images, multimodal_fields, has_tool_images)
            self._metrics["train"]["on_policy"].append(0.0)
            out = []
            for _, text in zip(prompt_ids, completions, strict=True):
                tail = self._tokenizer(text=text, add_special_tokens=False)["input_ids"]
                out.append(tail[: self.max_completion_length - 1] + [self.eos_token_ids[0]])
            return out

    return MixedPolicyDistillationTrainer


def _trainer_class(base: type, settings: OnPolicySettings, speed: Speed) -> type:
    """`base` sampling with a static cache on the fast path, with GKD's lambda when lmbda < 1."""
    if speed.static_decode:
        base = static_decode_class(base)
    return _mixed_trainer_class(base) if settings.lmbda < 1.0 else base


def _student(student_dir: Path, speed: Speed):
    """The student model (or its path, for plain TRL). It samples with left-padded prompts, so it keeps
    sdpa attention, and its layers stay uncompiled: transformers compiles the static-cache decode step."""
    if speed.name == "plain":
        return str(student_dir)
    return load_student(str(student_dir), speed, attention="sdpa", compile_model=False)


def _log_series(log_history: list[dict], key: str) -> list[float]:
    return [log[key] for log in log_history if key in log]


def train_onpolicy(data: str | Path, student: str, teacher: str | None, output_dir: str | Path,
                   settings: OnPolicySettings = OnPolicySettings(), self_distill: bool = False,
                   teacher_url: str | None = None, teacher_top_k: int | None = None,
                   run: Run | None = None) -> dict:
    """Distil `teacher` (a model, or the one served at `teacher_url`; with self_distill, the
    trace-conditioned student) into `student` on-policy.

    Returns losses, timing and the model dir. `run`, when given, receives the trainer's resolved
    config for the run record in the store.
    """
    data, output_dir = Path(data), Path(output_dir)
    if self_distill and teacher:
        raise DistillError("--self-distill uses the student's own initial weights as teacher: drop --teacher")
    if teacher_url and (teacher or self_distill):
        raise DistillError("--teacher-url is the teacher: drop --teacher / --self-distill")
    if not self_distill and not teacher and not teacher_url:
        raise DistillError("no teacher: pass --teacher NAME, --teacher-url URL, or --self-distill with an SFT export")
    # TRL's server loss: top-k forward KL for beta 0, top-1 only for any other beta.
    top_k = teacher_top_k if teacher_top_k is not None else (20 if settings.beta == 0 else 1)
    if teacher_url and (top_k < 1 or (settings.beta > 0 and top_k != 1)):
        raise DistillError(f"--teacher-top-k {top_k}: a served teacher supports top-k >= 1 with --beta 0 and "
                           "only top-1 otherwise: use --beta 0 or drop --teacher-top-k")
    if not 0.0 <= settings.beta <= 1.0:
        raise DistillError(f"beta={settings.beta} is outside [0, 1]: 0 forward KL, 0.5 JSD, 1 reverse KL")
    if not 0.0 <= settings.lmbda <= 1.0:
        raise DistillError(f"lmbda={settings.lmbda} is outside [0, 1]: it is the share of on-policy batches")
    if settings.temperature <= 0:
        raise DistillError(f"temperature={settings.temperature} must be positive")
    if self_distill and settings.lmbda != 1.0:
        raise DistillError("--self-distill is always on-policy (TRL's SDFTTrainer): leave --lmbda at 1")
    if settings.max_new_tokens >= settings.max_length:
        raise DistillError(f"max_new_tokens={settings.max_new_tokens} leaves no room for the prompt in "
                           f"max_length={settings.max_length}")
    rows = _read_rows(data)
    with_completion = sum(r["completion"] is not None for r in rows)
    if self_distill and with_completion < len(rows):
        raise DistillError(f"{data}: {len(rows) - with_completion} rows have no verified trace; --self-distill "
                           "needs an SFT export (`distill curate`) whose last turn is the assistant's trace")
    if settings.lmbda < 1.0 and with_completion < len(rows):
        raise DistillError(f"lmbda={settings.lmbda} needs a completion for every row (an SFT export); "
                           f"{data} has {len(rows) - with_completion} without one")
    mode = "selfdistill" if self_distill else "onpolicy"
    served = None
    if teacher_url:
        from train.server_teacher import base_url, served_model

        teacher_url = base_url(teacher_url)
        served = f"{served_model(teacher_url)} at {teacher_url}/v1"
    identity = json.dumps([student, teacher, mode] + ([served, top_k] if served else []))
    speed = resolve_speed(settings.speed)
    final_dir = output_dir / f"{mode}-{fingerprint(data, identity, replace(settings, speed=speed.name))}"
    cached = cached_summary(final_dir)
    if cached:
        return cached

    # Heavy imports stay here so `distill --help` is instant.
    from datasets import Dataset
    from transformers import AutoTokenizer

    from clients.models import model_path

    student_dir = model_path(student)
    teacher_dir = model_path(teacher) if teacher else None
    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    max_prompt = settings.max_length - settings.max_new_tokens

    def prompt_len(prompt) -> int:
        return len(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)["input_ids"])

    if self_distill:
        # The teacher's prompt holds the trace too, so it must fit as well.
        records = [{"prompt": r["prompt"], "privileged_context": r["completion"]} for r in rows
                   if prompt_len(r["prompt"][:-1] + [{"role": "user", "content": TEACHER_TEMPLATE.format(
                       prompt=r["prompt"][-1]["content"], privileged_context=r["completion"])}]) <= max_prompt]
    else:
        records = [{"prompt": r["prompt"], "completion": r["completion"] or ""} for r in rows
                   if prompt_len(r["prompt"]) <= max_prompt]
    if not records:
        raise DistillError(f"every prompt in {data} is longer than max_length - max_new_tokens = {max_prompt} "
                           "tokens: raise --max-length")
    dataset = Dataset.from_list(records)
    checkpoints = checkpoint_root(final_dir)
    common = dict(
        output_dir=str(checkpoints), max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size, gradient_accumulation_steps=settings.grad_accum,
        learning_rate=settings.learning_rate, temperature=settings.temperature,
        max_completion_length=settings.max_new_tokens, seed=settings.seed,
        logging_steps=1, save_strategy="steps", save_steps=max(5, settings.max_steps // 4), save_total_limit=1,
        report_to="none", dataloader_num_workers=0,
        lr_scheduler_type="constant_with_warmup", warmup_steps=min(2, settings.max_steps),
        **trainer_arguments(speed),
        # Left-padded prompts bucketed to a few lengths: the static KV cache and its compiled step are reused.
        **({"pad_to_multiple_of": PROMPT_BUCKET} if speed.static_decode and not self_distill else {}),
    )
    if self_distill:
        from trl.experimental.sdft import SDFTConfig, SDFTTrainer

        config = SDFTConfig(
            **common, num_generations=1, max_prompt_length=max_prompt,
            teacher_model_kind="base",  # a frozen copy of the initial student
            distillation_mode="full_logits", distillation_alpha=settings.beta,  # same GJSD convention as beta
            teacher_prompt_template=TEACHER_TEMPLATE,
        )
        trainer = SDFTTrainer(model=str(student_dir), args=config, train_dataset=dataset,
                              processing_class=tokenizer)
    elif teacher_url:
        from trl.experimental.server_distillation import ServerDistillationConfig

        from train.server_teacher import server_trainer_class

        config = ServerDistillationConfig(**common, beta=settings.beta, teacher_model_server_url=teacher_url,
                                          loss_top_k=top_k)
        trainer = _trainer_class(server_trainer_class(), settings, speed)(
            model=_student(student_dir, speed), args=config, train_dataset=dataset, processing_class=tokenizer)
    else:
        from trl import DistillationConfig, DistillationTrainer

        config = DistillationConfig(**common, beta=settings.beta, teacher_model_init_kwargs=(
            {"dtype": "float32"} if speed.name == "plain" else None))
        # Plain: TRL loads both models itself. Otherwise the frozen teacher is loaded in speed's
        # configuration (bf16 and compiled layers on the fast path; sdpa: its batch is left-padded).
        teacher_model = str(teacher_dir) if speed.name == "plain" else load_frozen(str(teacher_dir), speed,
                                                                                   attention="sdpa")
        try:
            trainer = _trainer_class(DistillationTrainer, settings, speed)(
                model=_student(student_dir, speed), teacher_model=teacher_model, args=config,
                train_dataset=dataset, processing_class=tokenizer)
        except ValueError as e:
            if "vocab" in str(e):
                raise DistillError(f"teacher {teacher} and student {student} do not share a vocabulary: "
                                   "on-policy distillation compares full next-token distributions") from None
            raise
    if not self_distill:
        trainer.lmbda = settings.lmbda
        if speed.static_decode:
            use_static_cache(trainer, compile_decode=speed.cuda)
    if run:
        run.add_config(trainer=config.to_dict(), speed=speed.as_dict())
    # Resume from the last checkpoint so a killed training run continues instead of restarting.
    has_checkpoint = checkpoints.exists() and any(checkpoints.glob("checkpoint-*"))
    result = trainer.train(resume_from_checkpoint=True if has_checkpoint else None)
    history = trainer.state.log_history
    losses = _log_series(history, "loss")
    tmp_dir = final_dir.with_name(final_dir.name + ".tmp")
    if is_main_process():
        shutil.rmtree(tmp_dir, ignore_errors=True)
    trainer.save_model(str(tmp_dir))
    teacher_name = teacher or served or "self (initial weights)"
    summary = {"model_dir": str(final_dir), "student": student, "teacher": teacher_name, "mode": mode,
               "rows": len(rows), "rows_used": len(records), "steps": result.global_step,
               "first_loss": losses[0] if losses else math.nan, "last_loss": losses[-1] if losses else math.nan,
               "losses": losses,
               "completion_mean_length": _log_series(history, "completions/mean_length"),
               "on_policy": _log_series(history, "on_policy"),
               "train_runtime_s": result.metrics.get("train_runtime"), "settings": asdict(settings)}
    return publish(tmp_dir, final_dir, summary, tokenizer)


def main(argv: list[str] | None = None) -> None:
    parser = trainer_parser(__doc__, "prompt export or messages export, JSONL or Parquet", "runs/onpolicy")
    parser.add_argument("--teacher", default=None, help="registry name, path or HF id (same vocabulary)")
    parser.add_argument("--teacher-url", default=None,
                        help="OpenAI-style base URL of a `distill serve` / `vllm serve` teacher, "
                             "e.g. http://127.0.0.1:8000/v1 (scores via prompt_logprobs)")
    parser.add_argument("--teacher-top-k", type=int, default=None,
                        help="with --teacher-url: teacher log-probs per position (default 20 for --beta 0, "
                             "else 1, the only one TRL supports there)")
    parser.add_argument("--self-distill", action="store_true",
                        help="teacher = frozen initial student that also sees the verified trace")
    add_settings(parser, OnPolicySettings)
    args = parser.parse_args(argv)
    settings = settings_from(args, OnPolicySettings)
    skip = ("losses", "completion_mean_length", "on_policy")
    with recorded_run(args.store, "train-onpolicy", vars(args)) as run:
        summary = train_onpolicy(args.data, args.student, args.teacher, args.output, settings,
                                 self_distill=args.self_distill, teacher_url=args.teacher_url,
                                 teacher_top_k=args.teacher_top_k, run=run)
        record_summary(run, {k: v for k, v in summary.items() if k not in skip})
    print(json.dumps(run.summary, indent=1))


if __name__ == "__main__":
    run_script(main)
