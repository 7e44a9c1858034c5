"""How good is curation.math_answers as a grader? Measured on CHAMP's recorded teacher answers.

(a) agreement with the human first-wrong-step labels: an annotated solution with no wrong step
    ([None, None]) is human-correct, anything else human-incorrect. Caveat: a solution with a wrong
    step can still reach the right final answer, so "checker says correct, human says incorrect" is
    partly expected; the reliable number is recall on human-correct solutions.
(b) final-answer accuracy of each model's one-sentence answers per prompt setting and overall
    (CHAMP paper, for orientation: GPT-4 Turbo about 0.4-0.6 depending on setting, GPT-3.5 and
    PaLM 2 Medium far lower); a missing answer (truncated solution) counts as wrong.
(c) how the checker reads the 270 golds: as math values, yes/no, "no solution", or text only.
(d) runtime per 1,000 equivalent() calls, on the main thread and from worker threads.

run:
  /tmp/venv0/bin/python bench/champ_checker.py                 # all tables (~1-2 min)
  /tmp/venv0/bin/python bench/champ_checker.py --show 40       # also print 40 disagreements with humans
  options: --threads N (worker threads for the threaded timing, default 8), --limit N (rows, for a quick look)
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from curation import math_answers as ma  # noqa: E402  (after the sys.path line)
from prompts.champ import load_champ  # noqa: E402

MODELS = ["GPT-3.5", "GPT-4", "GPT-4 Turbo", "PaLM 2 Medium"]


def gold_kind(gold: str) -> str:
    if re.match(r"\s*(yes|no|true|false)\b(?!\s+[a-z])", gold, re.I):
        return "yes/no"
    kinds = []
    for alt, text_only in ma._alts(gold):
        if not text_only and ma._gold_solutions(alt) is not None:
            return "math value"
        kinds.append("no solution" if ma._NONE_GOLD.search(alt) else "text")
    return "no solution" if "no solution" in kinds else "text"


def table(header: list[str], rows: list[list]) -> str:
    cells = [header] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--show", type=int, default=0, help="print this many disagreements with the human labels")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args()

    rows = load_champ()[: args.limit or None]
    items = [(r, model, setting, e)
             for r in rows for model, d in r.meta["recorded"].items() for setting, e in d.items()]
    print(f"CHAMP: {len(rows)} problems, {len(items)} recorded answers, math_answers VERSION {ma.VERSION}\n")

    t0 = time.perf_counter()
    verdicts = [ma.equivalent(e["answer"], r.gold) for r, _, _, e in items]
    main_s = time.perf_counter() - t0
    n_calls = len(items)

    # (a) agreement with human labels
    conf = Counter()
    disagreements = []
    for (r, model, setting, e), ok in zip(items, verdicts):
        if "first_wrong_step" not in e:
            continue
        human = tuple(e["first_wrong_step"]) == (None, None)
        conf[(human, ok)] += 1
        if human != ok:
            disagreements.append((human, ok, r.gold, e["answer"], model, setting))
    tp, fp, fn, tn = conf[(True, True)], conf[(False, True)], conf[(True, False)], conf[(False, False)]
    total = tp + fp + fn + tn
    print("(a) checker vs human first-wrong-step labels (positive = correct)")
    print(table(["", "checker correct", "checker incorrect"],
                [["human correct (no wrong step)", tp, fn], ["human incorrect (a wrong step)", fp, tn]]))
    div = lambda a, b: a / b if b else float("nan")  # noqa: E731
    print(f"\n{total} annotated: accuracy {div(tp + tn, total):.3f}, precision {div(tp, tp + fp):.3f}, "
          f"recall {div(tp, tp + fn):.3f}, specificity {div(tn, tn + fp):.3f}")
    print("Caveat: a wrong step does not always give a wrong final answer, so part of the "
          f"{fp} 'checker correct / human incorrect' cells are right answers reached by flawed reasoning.\n")

    # (b) per model and setting
    acc: dict = defaultdict(lambda: [0, 0])
    for (r, model, setting, e), ok in zip(items, verdicts):
        for key in ((model, setting), (model, "overall")):
            acc[key][0] += ok
            acc[key][1] += 1
    settings = list(dict.fromkeys(s for _, _, s, _ in items))
    models = [m for m in MODELS if (m, "overall") in acc]
    print("(b) final-answer accuracy of the recorded one-sentence answers")
    print(table(["setting"] + models, [[s] + [div(*acc[(m, s)]) for m in models] for s in settings + ["overall"]]))
    missing = Counter(m for _, m, _, e in items if e["answer"] is None)
    print("missing answers (truncated, counted wrong): " + ", ".join(f"{m} {missing[m]}" for m in models) + "\n")

    # (c) golds
    kinds = Counter(gold_kind(r.gold) for r in rows)
    print("(c) how the checker reads the golds")
    print(table(["gold read as", "problems", "share"], [[k, v, v / len(rows)] for k, v in kinds.most_common()]))
    parsed = sum(v for k, v in kinds.items() if k != "text") / len(rows)
    print(f"parsed (math value, yes/no or no-solution): {parsed:.3f}; text golds (compared by content words): "
          + "; ".join(sorted({r.gold for r in rows if gold_kind(r.gold) == "text"})) + "\n")

    # (d) runtime, cold caches first run above; threaded run re-checks the same items (warm caches)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        threaded = list(pool.map(lambda it: ma.equivalent(it[3]["answer"], it[0].gold), items))
    thr_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    keys = [ma.answer_key(e["answer"]) for _, _, _, e in items]
    key_s = time.perf_counter() - t0
    print("(d) runtime")
    print(table(["run", "calls", "seconds", "s per 1,000 calls"], [
        ["equivalent, main thread, cold caches", n_calls, main_s, 1000 * main_s / n_calls],
        [f"equivalent, {args.threads} worker threads, warm caches", n_calls, thr_s, 1000 * thr_s / n_calls],
        ["answer_key, main thread", n_calls, key_s, 1000 * key_s / n_calls]]))
    print(f"threaded verdicts identical to main-thread verdicts: {threaded == verdicts}; "
          f"answers with a key: {sum(k is not None for k in keys)}/{n_calls}")

    if args.show:
        print(f"\ndisagreements with humans (first {args.show}):")
        for human, ok, gold, answer, model, setting in disagreements[: args.show]:
            verdicts_ = f"human {'OK ' if human else 'BAD'} checker {'OK ' if ok else 'BAD'}"
            print(f"- {verdicts_} gold {gold!r} | {model} {setting}: {(answer or '')[:220]!r}"
                  f" -> {ma.extract_answer(answer or '')!r}")


if __name__ == "__main__":
    main()
