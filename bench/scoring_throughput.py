"""Option-scoring throughput: per-item vs batched across items, on real offline models (CPU).

The per-item baseline is lm-eval-harness style: one item at a time, its prompt run once and
its KV cache copied per option (`LocalGenerator.continuation_details`, what `distill eval
cascade` did before). The batched path (`continuation_details_batch`, what `_score_local` uses
now) sorts items by length, runs several prompts in one left-padded pass, gathers the cache
per option and applies the vocabulary head only where option tokens are predicted.

Both paths score the same items: arc_easy test questions (4 options), each as a 3-shot "mc"
prompt (options listed) and as a 3-shot cloze prompt (the option continues the question), so
2 x --questions items. The script checks that both give the same answer and per-token
log-probs within 1e-4, and prints items/s and the ratio. The two paths take turns on blocks
of --block items (ABBA order), so load from other jobs on a shared machine hits both alike.

    python bench/scoring_throughput.py [--models smollm2-135m-instruct,gemma-3-270m] [--questions 24] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from evals.scoring import exemplar_sets, mc_prompt  # noqa: E402
from evals.signals import choice_features  # noqa: E402
from prompts.data import load_task  # noqa: E402
from clients.teachers import get_teacher  # noqa: E402


def build_items(questions: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    rows = load_task("arc_easy")
    shots = exemplar_sets(rows, shots=3, variants=1, seed=seed)[0]
    test = sorted((r for r in rows if r.split == "test"), key=lambda r: r.id)[:questions]
    return [(mc_prompt(r, shots, style), [" " + c for c in r.choices]) for style in ("mc", "cloze") for r in test]


def max_diff(a: list[list[dict]], b: list[list[dict]]) -> float:
    return max(abs(x - y) for da, db in zip(a, b) for oa, ob in zip(da, db)
               for key in ("token_logprobs", "top2_margins") for x, y in zip(oa[key], ob[key]))


def bench(name: str, items: list[tuple[str, list[str]]], block: int) -> dict:
    model = get_teacher(name)
    model.continuation_details(*items[0])  # warm-up (allocator, first-call overheads)
    # Blocks of `block` items, the two paths alternating first (ABBA...), so a neighbour's load
    # that changes over the run hits both paths alike.
    single, batched, old_s, new_s = [], [], 0.0, 0.0
    for k, start in enumerate(range(0, len(items), block)):
        part = items[start:start + block]
        for path in (("old", "new") if k % 2 == 0 else ("new", "old")):
            began = time.perf_counter()
            if path == "old":
                single += [model.continuation_details(p, c) for p, c in part]
                old_s += time.perf_counter() - began
            else:
                batched += model.continuation_details_batch(part)
                new_s += time.perf_counter() - began
    answers = [(choice_features(a)["answer_index"], choice_features(b)["answer_index"]) for a, b in zip(single, batched)]
    tokens = sum(len(model.tokenizer(p)["input_ids"]) for p, _ in items) / len(items)
    return {"model": name, "items": len(items), "mean_prompt_tokens": tokens, "per_item_s": old_s,
            "batched_s": new_s, "per_item_items_s": len(items) / old_s, "batched_items_s": len(items) / new_s,
            "speedup": old_s / new_s, "answers_agree": sum(x == y for x, y in answers),
            "max_abs_diff": max_diff(single, batched), "token_budget": model.score_token_budget}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="smollm2-135m-instruct,gemma-3-270m")
    ap.add_argument("--questions", type=int, default=24, help="arc_easy test questions (items = 2 x this)")
    ap.add_argument("--block", type=int, default=16, help="items per timed block (paths alternate per block)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0: torch's default). On a machine shared with other jobs use fewer "
                         "threads than free cores: an oversubscribed thread pool runs several times slower")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    items = build_items(args.questions)
    print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    results = []
    for name in args.models.split(","):
        r = bench(name, items, args.block)
        results.append(r)
        print(f"{name}: {r['items']} items ({r['mean_prompt_tokens']:.0f} prompt tokens on average), "
              f"per-item {r['per_item_items_s']:.2f} items/s ({r['per_item_s']:.1f} s), batched "
              f"{r['batched_items_s']:.2f} items/s ({r['batched_s']:.1f} s): {r['speedup']:.2f}x; answers agree "
              f"{r['answers_agree']}/{r['items']}, max |diff| {r['max_abs_diff']:.1e}", flush=True)
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("\n| model | items | per-item items/s | batched items/s | speed-up | answers agree | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['items']} | {r['per_item_items_s']:.2f} | {r['batched_items_s']:.2f} | "
              f"{r['speedup']:.2f}x | {r['answers_agree']}/{r['items']} | {r['max_abs_diff']:.1e} |")
    bad = [r["model"] for r in results if r["answers_agree"] != r["items"] or r["max_abs_diff"] > 1e-4]
    if bad:
        sys.exit(f"batched scoring disagrees with the per-item path for {', '.join(bad)}")


if __name__ == "__main__":
    main()
