"""The whole loop on the embedded default: data → teachers → curation → SFT → cascade eval.

Every stage reads and writes the store and is recorded as a run; re-running the demo
reuses finished teacher calls, verdicts and the trained student. The evaluation is the one
`distill eval cascade` runs (evals.task_eval.evaluate_task), with the student before
distillation scored beside it on the same prompts.
"""
from __future__ import annotations

import json
import sys
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from core.errors import DistillError
from store.runs import recorded_run


@dataclass
class DemoConfig:
    task: str = "sciq"  # why: DEFAULT_TASK_WHY
    teachers: list[str] = field(default_factory=lambda: ["gemma-3-270m", "smollm2-135m-instruct"])
    student: str = "smollm2-135m-instruct"
    out: str = "runs/demo"
    store: str = ""  # default: <out>/store.duckdb
    trace_prompts: int = 16  # train prompts each teacher writes chain-of-thought traces for
    samples: int = 2
    temperature: float = 0.7
    max_new_tokens: int = 64
    examples: int = 2
    label_prompts: int = 200  # train prompts the teachers answer for the student's training set
    eval_prompts: int = 250  # per split: calibration and test (SciQ has 194 and 221: all of them)
    prompt_style: str = "cloze"
    shots: int = 0
    signal: str = "auto"
    max_teacher_share: float = 0.5
    committee: bool = True
    sft_epochs: float = 1.0
    sft_batch_size: int = 8
    learning_rate: float = 5e-5
    batch_size: int = 16  # generation batch
    seed: int = 0


# Offline models have no list price: the demo prices a million tokens at $1 per billion parameters
# (notional, proportional to compute) so the report can show what a cascade saves in money too.
NOTIONAL_PRICES = {"gemma-3-270m": 0.27, "smollm2-135m-instruct": 0.135}

# Chosen by bench/demo_task_probe.py on TRAIN rows only (pseudo calibration/test halves of the
# train split; the real calibration and test splits were never scored for the choice).
DEFAULT_TASK_WHY = (
    "SciQ (science questions with a support passage, 4 options, human-written) is where the two offline "
    "models leave room for a cascade: on 520 train rows, cloze scoring with no exemplars, the student "
    "smollm2-135m-instruct scored 64%, gemma-3-270m 80%, their committee 77%, and the student's top-option "
    "probability told its right answers from its wrong ones with AUROC 0.73; a cascade escalating half "
    "the queries beat random routing by +5.9 points [+2.9, +8.6]. ARC-Easy, the first candidate, left "
    "none (54% vs 59%, AUROC 0.59, cascade - random -0.3 points [-4.5, +4.0]); see bench/RESULTS.md "
    "(demo_task_probe.py).")

PRESETS = {
    "default": {},
    "fast": dict(trace_prompts=4, label_prompts=48, eval_prompts=40, max_new_tokens=32, out="runs/demo-fast"),
    "tiny": dict(trace_prompts=2, label_prompts=8, eval_prompts=10, max_new_tokens=24, samples=2,
                 sft_batch_size=8, out="runs/demo-tiny"),
}


def _coerce(name: str, raw: object, current: object) -> object:
    if isinstance(current, list):
        return raw if isinstance(raw, list) else [s.strip() for s in str(raw).split(",") if s.strip()]
    if isinstance(current, bool) and isinstance(raw, str):
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise DistillError(f"config key '{name}' expects true or false, got {raw!r}")
        return raw.lower() in ("true", "1", "yes")
    try:
        return type(current)(raw) if not isinstance(raw, type(current)) else raw
    except (TypeError, ValueError):
        raise DistillError(f"config key '{name}' expects {type(current).__name__}, got {raw!r}") from None


def make_config(preset: str = "default", config_file: str | None = None,
                overrides: list[str] | None = None) -> DemoConfig:
    """Preset, then a TOML file, then key=value overrides; unknown keys are refused."""
    if preset not in PRESETS:
        raise DistillError(f"unknown preset '{preset}': use one of {', '.join(PRESETS)}")
    values: dict[str, object] = dict(PRESETS[preset])
    if config_file:
        path = Path(config_file)
        if not path.exists():
            raise DistillError(f"config file {path} not found")
        try:
            values.update(tomllib.loads(path.read_text()))
        except tomllib.TOMLDecodeError as err:
            raise DistillError(f"config file {path} is not valid TOML: {err}") from None
    for item in overrides or []:
        if "=" not in item:
            raise DistillError(f"override {item!r} must look like key=value, e.g. --set eval_prompts=100")
        key, value = item.split("=", 1)
        values[key.strip()] = value.strip()
    known = {f.name: f for f in fields(DemoConfig)}
    config = DemoConfig()
    for key, raw in values.items():
        if key not in known:
            raise DistillError(f"unknown config key '{key}': valid keys are {', '.join(known)}")
        config = replace(config, **{key: _coerce(key, raw, getattr(config, key))})
    if not config.store:
        config.store = str(Path(config.out) / "store.duckdb")
    if len(config.teachers) < 1:
        raise DistillError("config key 'teachers' needs at least one teacher")
    return config


class StageClock:
    """Times each stage, records it as a run in the store, prints a line when it ends."""

    def __init__(self, store) -> None:
        self.store, self.timings = store, {}

    def run(self, stage: str, config: dict, fn):
        print(f"\n== {stage} ==", file=sys.stderr, flush=True)
        began = time.perf_counter()
        with recorded_run(self.store, stage, config) as run:
            result = fn(run.run_id)
        seconds = time.perf_counter() - began
        self.timings[stage] = round(self.timings.get(stage, 0.0) + seconds, 1)
        print(f"   {stage}: {seconds:.1f}s  {json.dumps(result, default=str)[:300]}", file=sys.stderr, flush=True)
        return result


def run_demo(config: DemoConfig) -> dict:
    """Run every stage; returns the timings, stage results and the report path."""
    from curation.dedup import dedup_samples
    from curation.purify import METHOD, select_traces
    from store.store import Store
    from curation.verify import VERIFIER, verify_samples
    from distill.demo_sections import demo_sections
    from distill.distill_data import build_sft_data
    from evals.signals import check_scoring_options
    from evals.settings import CascadeSettings
    from evals.task_eval import evaluate_task, load_task_pool
    from prompts.data import load_task
    from synth.cot import CotParams, generate_traces
    from clients.models import model_path
    from clients.teachers import get_teacher
    from train.sft import SFTSettings, train_sft

    # Resolve every model, option and the task before the store is touched: bad input leaves it unchanged.
    for name in [*config.teachers, config.student]:
        model_path(name)
    check_scoring_options("none", config.prompt_style)
    rows = load_task(config.task)
    out = Path(config.out)
    began = time.perf_counter()
    results: dict[str, object] = {}
    with Store(config.store) as store, recorded_run(store, "demo", asdict(config)) as demo:
        clock = StageClock(store)
        pool = clock.run("data", {"task": config.task}, lambda run_id: load_task_pool(store, config.task, run_id))
        results["data"] = {"pool": pool, "splits": {s: sum(r.split == s for r in rows)
                                                    for s in ("train", "calibration", "test")}}
        cot = CotParams(num_samples=config.samples, temperature=config.temperature,
                        max_new_tokens=config.max_new_tokens, num_examples=config.examples, seed=config.seed)
        teachers = [get_teacher(n, config.batch_size) for n in config.teachers]
        for teacher in teachers:
            results[f"synth {teacher.name}"] = clock.run("synth", {"teacher": teacher.name, **asdict(cot)}, (
                lambda run_id, t=teacher: generate_traces(store, t, pool, cot, run_id, split="train",
                                                          limit=config.trace_prompts)))

        def curate(run_id: str) -> dict:
            return {"verify": verify_samples(store, pool, run_id), "dedup": dedup_samples(store, pool, run_id),
                    "select": select_traces(store, pool, run_id)}
        results["curate"] = clock.run("curate", {"pool": pool}, curate)
        results["funnel"] = store.trace_funnel(pool, VERIFIER, METHOD)
        results["distill data"] = clock.run("label", {"label_prompts": config.label_prompts}, lambda run_id: (
            build_sft_data(store, pool, teachers, out / "sft.jsonl", run_id, limit=config.label_prompts,
                           shots=config.shots, style=config.prompt_style, committee=config.committee,
                           seed=config.seed)))
        rows_out = results["distill data"]["rows"]
        steps = max(1, round(config.sft_epochs * rows_out / config.sft_batch_size))
        settings = SFTSettings(max_steps=steps, batch_size=config.sft_batch_size,
                               learning_rate=config.learning_rate, seed=config.seed, max_length=512)
        trained = clock.run("train", {"student": config.student, **asdict(settings)},
                            lambda run_id: train_sft(out / "sft.jsonl", config.student, out / "student", settings))
        results["train"] = {k: v for k, v in trained.items() if k != "losses"}

        student = get_teacher(trained["model_dir"], config.batch_size)
        # A readable name for the report; it keys the student's cached scores, and the model dir's
        # fingerprint in it changes whenever the training data or settings do.
        student.name = f"{config.student} distilled ({Path(trained['model_dir']).name})"
        # The untrained student, on the same prompts. When it is also a teacher its scores are the
        # teacher's own cached requests (same model, same prompt): no extra model call.
        before = get_teacher(config.student, config.batch_size)
        cascade = CascadeSettings(signal=config.signal, max_teacher_share=config.max_teacher_share,
                                  shots=config.shots, limit=config.eval_prompts, prompt_style=config.prompt_style,
                                  committee=config.committee, kd_baseline=False, rationales=0, resplits=0,
                                  seed=config.seed, prices=_prices(config, student.name))
        evaluated = clock.run("eval", {"pool": pool, "limit": config.eval_prompts}, lambda run_id: evaluate_task(
            store, config.task, student, teachers, out / "report", run_id, cascade, baselines=[before],
            title=f"Distillation demo: {config.task}"))
        timings = dict(clock.timings, total=round(time.perf_counter() - began, 1))
        # The report's own sections (data, funnel, training, savings, timings) are known only now:
        # write the report once more with them, from the same result.
        from evals.report import write_cascade_report
        why = DEFAULT_TASK_WHY if config.task == DemoConfig.task else "chosen by the user (`--set task=...`)."
        sections = demo_sections(config, results, trained, evaluated.result, timings, why)
        report = write_cascade_report(evaluated.result, out / "report", f"Distillation demo: {config.task}",
                                      sections)
        demo.timings.update(timings)
    return {"timings": timings, "report": str(report), "results": results, "eval": evaluated.result}


def _prices(config: DemoConfig, trained_name: str) -> dict[str, float]:
    """Notional prices of the configured models; the distilled student costs what its base costs."""
    prices = {m: NOTIONAL_PRICES[m] for m in [*config.teachers, config.student] if m in NOTIONAL_PRICES}
    if config.student in prices:
        prices[trained_name] = prices[config.student]
    return prices
