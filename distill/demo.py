"""The whole loop on the embedded default: data → teachers → curation → SFT → cascade eval.

Every stage reads and writes the store and is recorded as a run; re-running the demo
reuses finished teacher calls, verdicts and the trained student.
"""
from __future__ import annotations

import json
import sys
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from distill.errors import DistillError


@dataclass
class DemoConfig:
    task: str = "bigbench:strategyqa"
    teachers: list[str] = field(default_factory=lambda: ["gemma-3-270m", "smollm2-135m-instruct"])
    student: str = "smollm2-135m-instruct"
    out: str = "runs/demo"
    store: str = ""  # default: <out>/store.duckdb
    train_prompts: int = 48
    eval_prompts: int = 60  # per split: calibration and test
    samples: int = 2
    temperature: float = 0.7
    max_new_tokens: int = 64
    examples: int = 2
    sft_steps: int = 30
    sft_batch_size: int = 4
    learning_rate: float = 1e-4
    batch_size: int = 16  # generation batch
    seed: int = 0


PRESETS = {
    "default": {},
    "fast": dict(train_prompts=12, eval_prompts=16, max_new_tokens=40, sft_steps=6, out="runs/demo-fast"),
    "tiny": dict(train_prompts=6, eval_prompts=5, max_new_tokens=48, samples=2, sft_steps=2,
                 sft_batch_size=2, out="runs/demo-tiny"),
}


def _coerce(name: str, raw: object, current: object) -> object:
    if isinstance(current, list):
        return raw if isinstance(raw, list) else [s.strip() for s in str(raw).split(",") if s.strip()]
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
            raise DistillError(f"override {item!r} must look like key=value, e.g. --set sft_steps=10")
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
        run_id = self.store.start_run(stage, config)
        began = time.perf_counter()
        print(f"\n== {stage} ==", file=sys.stderr, flush=True)
        try:
            result = fn(run_id)
        except BaseException:
            self.store.finish_run(run_id, "failed", {"seconds": time.perf_counter() - began})
            raise
        seconds = time.perf_counter() - began
        self.timings[stage] = round(self.timings.get(stage, 0.0) + seconds, 1)
        self.store.finish_run(run_id, "done", {"seconds": seconds})
        print(f"   {stage}: {seconds:.1f}s  {json.dumps(result, default=str)[:300]}", file=sys.stderr, flush=True)
        return result


def run_demo(config: DemoConfig) -> dict:
    """Run every stage; returns the timings, stage results and the report path."""
    from curation.dedup import dedup_samples
    from curation.export import export_sft
    from curation.purify import select_traces
    from curation.store import Store
    from curation.verify import verify_samples
    from evals.pipeline import evaluate_cascade
    from prompts.data import fetch_bigbench, load_task
    from synth.cot import CotParams, STOP, generate_traces
    from synth.engine import GenParams
    from synth.models import model_path
    from synth.teachers import get_teacher
    from train.sft import SFTSettings, train_sft

    # Resolve every model and the task before the store is touched: bad input leaves it unchanged.
    for name in [*config.teachers, config.student]:
        model_path(name)
    if config.task.startswith("bigbench:"):
        fetch_bigbench()  # once per machine (pip download, ~20 s); a no-op when cached
    rows = load_task(config.task)
    pool = config.task.split(":")[-1].replace("/", "_")
    out = Path(config.out)
    began = time.perf_counter()
    results: dict[str, object] = {}
    with Store(config.store) as store:
        clock = StageClock(store)
        demo_run = store.start_run("demo", asdict(config))
        results["data"] = clock.run("data", {"task": config.task}, lambda run_id: {
            "new_prompts": store.add_prompts(rows, pool, run_id), "pool": pool,
            "splits": {s: sum(r.split == s for r in rows) for s in ("train", "calibration", "test")}})
        cot = CotParams(num_samples=config.samples, temperature=config.temperature,
                        max_new_tokens=config.max_new_tokens, num_examples=config.examples, seed=config.seed)
        for name in config.teachers:
            teacher = get_teacher(name, config.batch_size)
            results[f"synth {name}"] = clock.run("synth", {"teacher": name, **asdict(cot)}, lambda run_id: (
                generate_traces(store, teacher, pool, cot, run_id, split="train", limit=config.train_prompts)))

        def curate(run_id: str) -> dict:
            return {"verify": verify_samples(store, pool, run_id), "dedup": dedup_samples(store, pool, run_id),
                    "select": select_traces(store, pool, run_id),
                    "export": export_sft(store, pool, out / "sft.jsonl")}
        results["curate"] = clock.run("curate", {"pool": pool}, curate)
        settings = SFTSettings(max_steps=config.sft_steps, batch_size=config.sft_batch_size,
                               learning_rate=config.learning_rate, seed=config.seed)
        trained = clock.run("train", {"student": config.student, **asdict(settings)},
                            lambda run_id: train_sft(out / "sft.jsonl", config.student, out / "student", settings))
        results["train"] = {k: v for k, v in trained.items() if k != "losses"}

        params = GenParams(max_new_tokens=config.max_new_tokens, temperature=0.0, stop=STOP)
        student = get_teacher(trained["model_dir"], config.batch_size)
        teachers = [get_teacher(n, config.batch_size) for n in config.teachers]
        sections = {
            "Data": _data_section(config, results),
            "Curation": "```\n" + json.dumps(results["curate"], indent=1) + "\n```",
            "Student training (TRL SFTTrainer)": _train_section(trained),
        }
        evaluated = clock.run("eval", {"pool": pool, "limit": config.eval_prompts}, lambda run_id: evaluate_cascade(
            store, pool, student, teachers, run_id, out / "report", params, limit=config.eval_prompts,
            extra_sections=sections, title=f"Distillation demo: {config.task}"))
        timings = dict(clock.timings, total=round(time.perf_counter() - began, 1))
        # The timings section is only known at the end: rewrite the report with it.
        from evals.report import write_report
        sections["Stage timings (seconds)"] = "\n".join(f"- {k}: {v}" for k, v in timings.items())
        report = write_report(evaluated["result"], out / "report", f"Distillation demo: {config.task}", sections)
        store.finish_run(demo_run, "done", timings)
    return {"timings": timings, "report": str(report), "results": results, "eval": evaluated["result"]}


def _data_section(config: DemoConfig, results: dict) -> str:
    data = results["data"]
    return (f"Task `{config.task}` (human labels), splits by hashed id: {data['splits']}. "
            f"Teachers {', '.join(config.teachers)} wrote {config.samples} traces for each of "
            f"{config.train_prompts} train prompts; calibration and test use up to {config.eval_prompts} "
            f"prompts each. Test rows never reach synthesis prompts, training data or threshold fitting.")


def _train_section(trained: dict) -> str:
    losses = trained.get("losses") or []
    curve = ", ".join(f"{x:.3f}" for x in losses)
    return (f"Student `{trained['student']}` fine-tuned for {trained['steps']} steps on {trained['rows']} "
            f"selected traces. Loss per step: {curve}.")
