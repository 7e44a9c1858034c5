"""Recipe: every kind of teacher signal from the offline teachers into one store.

    distill recipe signals --limit 4 --out runs/signals

The default task is `gsm8k` (from `distill data list`): human step-by-step rationales for the
few-shot exemplars and numeric gold answers to verify against; any other catalog task, a labelled
file or (if you brought BIG-bench) `bigbench:<task>` works with --task.

1. chain-of-thought traces (each teacher), verified against the human gold answer;
2. critiques and revisions (each teacher critiques and revises the other's traces), and
   UltraFeedback-style judge scores;
3. preference pairs: verified vs unverified, teacher vs student (PLaD), position-swapped judge;
4. tool-use trajectories: ReAct rollouts with a calculator and a sandboxed Python executor on
   arithmetic word problems, and BFCL function calls checked against the ground truth;
plus synthetic prompt expansion. Exports land next to the store in TRL's formats.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

DEFAULT_TEACHERS = ("gemma-3-270m", "smollm2-135m-instruct")
DEFAULT_TASK = "gsm8k"
ARITHMETIC_POOL = Path(__file__).resolve().parents[1] / "prompts" / "pools" / "arithmetic_word_problems.jsonl"


def run_signals_recipe(out: str | Path, task: str = DEFAULT_TASK, teachers=DEFAULT_TEACHERS,
                       limit: int = 4, samples: int = 2, max_new_tokens: int = 48) -> dict:
    from store.runs import recorded_run
    from store.store import Store
    from curation.verify import verify_samples
    from prompts.data import load_task
    from curation import pairs
    from synth import critique, expand, react
    from synth.cot import CotParams, generate_traces
    from clients.models import model_path
    from clients.teachers import get_teacher

    for name in teachers:
        model_path(name)
    rows = load_task(task)  # a missing data wheel or unknown task fails here, before any model runs
    out = Path(out)
    pool = task.split(":")[-1]
    results: dict[str, object] = {}
    config = {"task": task, "teachers": list(teachers), "limit": limit}
    with Store(out / "store.duckdb") as store, recorded_run(store, "recipe-signals", config) as run:
        run_id = run.run_id
        store.add_prompts(rows, pool, run_id)
        models = [get_teacher(n) for n in teachers]
        cot = CotParams(num_samples=samples, max_new_tokens=max_new_tokens)
        for t in models:
            results[f"cot {t.name}"] = generate_traces(store, t, pool, cot, run_id, limit=limit)
        results["verify"] = verify_samples(store, pool, run_id)
        critic, reviser = models[-1], models[0]
        results["critique"] = critique.critique_traces(store, critic, pool, run_id, max_new_tokens, limit)
        results["revise"] = critique.revise_traces(store, reviser, pool, run_id, max_new_tokens, limit)
        results["verify revisions"] = verify_samples(store, pool, run_id)
        results["judge"] = critique.judge_traces(store, critic, pool, run_id, limit=limit * 4)
        results["judge pairs"] = critique.judge_pairs(store, critic, pool, run_id, limit=limit)
        for strategy, kw in (("verified", {}), ("teacher_vs_student", {"student": teachers[-1]}),
                             ("best_vs_worst", {"score_prefix": "judge:"})):
            results[f"pairs {strategy}"] = pairs.build_pairs(store, pool, run_id, strategy, **kw)
        results["expand"] = expand.expand_prompts(store, models[-1], pool, run_id, count=limit)

        store.add_prompts(load_task(str(ARITHMETIC_POOL)), "arithmetic", run_id)
        for t in models:
            results[f"react {t.name}"] = react.generate_trajectories(store, t, "arithmetic", run_id, max_steps=3,
                                                                     max_new_tokens=max_new_tokens, limit=limit)
        store.add_prompts(load_task("bfcl:simple"), "bfcl-simple", run_id)
        for t in models:
            results[f"bfcl {t.name}"] = react.generate_bfcl_calls(store, t, "bfcl-simple", run_id,
                                                                  max_new_tokens=max_new_tokens, limit=limit)

        from curation.verify import verify_tool_samples
        results["verify tools"] = {p: verify_tool_samples(store, p, run_id) for p in ("arithmetic", "bfcl-simple")}
        results["exports"] = _exports(store, pool, out)
        results["samples by kind"] = store.counts_by("samples", "kind", ", count(answer) AS answered")
        results["pairs by strategy"] = {k: v["n"] for k, v in store.counts_by("pairs", "strategy").items()}
    return results


def _exports(store, pool: str, out: Path) -> dict:
    """Write whichever exports have rows; an empty kind is reported, not an error."""
    from curation.export import export_sft, export_trajectories
    from curation.purify import select_traces
    from curation.dedup import dedup_samples
    from core.errors import DistillError
    from curation.pairs import export_pairs

    done: dict[str, object] = {}
    dedup_samples(store, pool, "export")
    select_traces(store, pool, "export")
    for name, fn in (("sft", lambda: export_sft(store, pool, out / "sft.jsonl")),
                     ("pairs", lambda: export_pairs(store, pool, out / "pairs.jsonl", "verified")),
                     ("tools", lambda: export_trajectories(store, "arithmetic", out / "tools.jsonl"))):
        try:
            done[name] = fn()
        except DistillError as err:
            done[name] = f"empty: {err}"
    return done


def main(argv: list[str] | None = None) -> None:
    import argparse

    from core.flags import OneLineParser
    parser = OneLineParser(prog="distill recipe signals", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/signals")
    parser.add_argument("--task", default=DEFAULT_TASK,
                        help="a task from `distill data list` or a labelled file (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=4, help="prompts per stage")
    parser.add_argument("--max-new-tokens", type=int, default=48,
                        help="token budget of every model call: traces, critiques, ReAct steps, BFCL calls")
    args = parser.parse_args(argv)
    result = run_signals_recipe(args.out, args.task, limit=args.limit, max_new_tokens=args.max_new_tokens)
    print(json.dumps(result, indent=1, default=str), file=sys.stdout)
