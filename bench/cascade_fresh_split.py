"""Confirm a cascade result on rows no one has looked at: with 0 shots the train split is unused,
so it is a second, untouched test set.

Tasks for the cascade runs in bench/RESULTS.md were picked by a short scan that looked at
calibration/test rows; this script removes that selection bias. It fits everything on the
calibration split exactly as `distill eval cascade` does (same signal rule, calibrator, budget)
and scores the cascade on up to --limit train rows, which both models answer through the same
store request cache. Only valid with --shots 0 (no exemplar comes from the train split).

    python bench/cascade_fresh_split.py --task hellaswag \
        --store runs/eval.duckdb --prompt-style cloze --signal auto --max-teacher-share 0.5 --limit 700

Any task from `distill data list` works (hellaswag: 6,050 train rows, a cloze task like the
BIG-bench `goal_step_wikihow:step_inference` that the run in bench/RESULTS.md used; that one needs
BIG-bench's files, which only load if you bring them).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from store.store import Store  # noqa: E402
from evals.analysis import analyse  # noqa: E402
from evals.scoring import answer_items  # noqa: E402
from evals.task_eval import load_task_pool  # noqa: E402
from clients.teachers import get_teacher  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True, help="a task from `distill data list` (e.g. hellaswag) or a labelled file")
    p.add_argument("--store", required=True)
    p.add_argument("--student", default="smollm2-135m-instruct")
    p.add_argument("--teacher", default="gemma-3-270m")
    p.add_argument("--prompt-style", default="cloze", choices=("mc", "cloze"))
    p.add_argument("--signal", default="auto")
    p.add_argument("--max-teacher-share", type=float, default=0.5)
    p.add_argument("--limit", type=int, default=700, help="train rows used as the fresh test set")
    p.add_argument("--out", help="write the result JSON here")
    args = p.parse_args()
    student, teacher = get_teacher(args.student), get_teacher(args.teacher)
    with Store(args.store) as store:
        pool = load_task_pool(store, args.task, "fresh-split")
        calib = store.prompts(pool, split="calibration")
        fresh = store.prompts(pool, split="train", limit=args.limit)
        preds = {m.name: answer_items(store, m, calib + fresh, [[]], "fresh-split", role, style=args.prompt_style)
                 for m, role in ((student, "student"), (teacher, "teacher"))}
    for ps in preds.values():  # the untouched train rows play the test split
        for q in ps:
            q["split"] = "test" if q["split"] == "train" else q["split"]
    r = analyse(preds, student.name, [teacher.name], signal=args.signal,
                max_teacher_share=args.max_teacher_share).to_dict()
    rows = {x["role"]: x for x in r["rows"]}
    cvr, gain = r["cascade_vs_random"], r["curve_vs_random"]
    print(f"{args.task}: calibration n={len(calib)}, fresh (train split) n={len(fresh)}, signal {r['signal']}")
    for role in ("student", "teacher", "cascade", "random", "oracle"):
        x = rows[role]
        print(f"  {role:8s} {x['accuracy']:.3f} [{x['ci_low']:.3f}, {x['ci_high']:.3f}]  teacher calls "
              f"{x['teacher_share']:.0%}")
    print(f"  cascade - random at {cvr['teacher_share']:.0%} teacher calls: {cvr['difference']:+.3f} "
          f"[{cvr['ci_low']:+.3f}, {cvr['ci_high']:+.3f}]")
    print(f"  gain over random, whole curve: {gain['value']:+.3f} [{gain['ci_low']:+.3f}, {gain['ci_high']:+.3f}]")
    if args.out:
        Path(args.out).write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
