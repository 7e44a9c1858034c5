"""`distill pairs` and `distill curate`: thin layers over curation.pairs and the Curation API."""
from __future__ import annotations

import argparse
import json

from core.errors import DistillError
from distill.cli_common import run_config


def cmd_pairs(args: argparse.Namespace) -> None:
    from store.runs import recorded_run
    from store.store import Store
    from curation.pairs import build_pairs, export_pairs
    with Store(args.store) as store, recorded_run(store, "pairs", run_config(args)) as run:
        built = build_pairs(store, args.pool, run.run_id, args.strategy, args.margin, args.student)
        exported = export_pairs(store, args.pool, args.out, args.strategy)
    print(json.dumps({"build": built, "export": exported}, indent=1))


def cmd_curate(args: argparse.Namespace) -> None:
    if args.action == "purify-bench":
        from curation.purify_bench import run_bench
        settings = [s.strip() for s in args.settings.split(",") if s.strip()]
        run_bench(args.target, args.bench_out, args.store, settings)
        return
    from curation.api import Curation
    from curation.purify import METHODS
    from curation.verify import VERIFIERS
    if not args.pool:
        raise DistillError("distill curate needs --pool: the pool to curate (see `distill report`)")
    if args.method not in METHODS:  # checked before any stage runs: bad input leaves the store unchanged
        raise DistillError(f"unknown purification method {args.method!r}: choose from {', '.join(METHODS)}")
    unknown = [v for v in args.verifiers.split(",") if v not in VERIFIERS]
    if unknown:
        raise DistillError(f"unknown verifier(s) {unknown}: choose from {', '.join(sorted(VERIFIERS))}")
    with Curation(args.store, args.pool) as c:
        result = {"verify": c.verify(*args.verifiers.split(",")),
                  "dedup": c.dedup(threshold=args.threshold, ngram=args.ngram, num_perm=args.num_perm,
                                   scope=args.scope, workers=args.workers, executor=args.executor),
                  **({"embedding_dedup": c.embedding_dedup(args.embedding_threshold)} if args.embedding_threshold else {}),
                  "decontam": c.decontaminate(),
                  "purify": c.purify(args.method, **({"aggregator": args.aggregator} if args.aggregator else {})),
                  "export": c.export(args.export, args.out, method=args.method, strategy=args.strategy,
                                     reasoning=not args.no_reasoning, force=args.force,
                                     drop_contaminated=args.drop_contaminated)}
    print(json.dumps(result, indent=1, default=str))
