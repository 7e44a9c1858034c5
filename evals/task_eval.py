"""`distill eval cascade`: any labelled task, any student and teachers, one call.

Loads the task into the store (a pool named after the task spec), has every model answer
the calibration and test splits through the request cache, fits the cascade on
calibration, scores it on test against the human labels, adds the classic-KD baseline and
the re-split check, writes the report, the cascade spec (for `distill serve --cascade`) and
records the eval in the store. A re-run with the same models costs no model call.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from store.store import Store
from core.errors import DistillError
from evals.analysis import analyse
from evals.committee import can_form_committee, committee_name, committee_predictions
from core.stats import bootstrap_ci
from evals.report import write_cascade_report
from evals.results import BaselineCascade, CascadeResult, RationaleFidelity, Row
from evals.resplit import resplit_hold_rate
from evals.settings import CascadeSettings
from evals.scoring import answer_items, exemplar_sets
from prompts.data import load_task
from prompts.rows import PromptRow
from clients.teachers import Teacher

MAX_LABELS = 30  # a file without a choices column is a classification task up to this many labels


@dataclass
class TaskEvaluation:
    """What `evaluate_task` wrote: the report, the result in it and the spec `distill serve --cascade` reads."""

    report: Path
    result: CascadeResult
    cascade_spec: Path

    def __str__(self) -> str:  # one line for progress logs; the report has the rest
        casc = self.result.row("cascade")
        share = "n/a" if casc is None or casc.teacher_share is None else f"{casc.teacher_share:.0%}"
        acc = "n/a" if casc is None or casc.accuracy is None else f"{casc.accuracy:.3f}"
        return f"cascade accuracy {acc} at {share} teacher calls; report {self.report}"


def _is_number(text: str) -> bool:
    """"18", "-3.5", "1,234", "3/4"."""
    numerator, _, denominator = text.strip().replace(",", "").partition("/")
    try:
        float(numerator), float(denominator or 1)
    except ValueError:
        return False
    return True


def is_open_answer(rows: list[PromptRow]) -> bool:
    """No row has options and the gold answers are not a small label set (more than MAX_LABELS
    distinct values, or more distinct values than half the rows): gsm8k, asdiv, math. Such a task
    is evaluated open-answer: every model generates its answer, graded by `answers_match`
    (numbers, fractions, LaTeX via math-verify, text)."""
    labels = {r.gold for r in rows}
    return (bool(rows) and not any(r.choices for r in rows)
            and (len(labels) > MAX_LABELS or (len(labels) > len(rows) / 2 and all(_is_number(g) for g in labels))))


def _with_label_choices(rows: list[PromptRow]) -> list[PromptRow]:
    """Rows of a plain (input, label) file get the task's label set as their options; an
    open-answer task (`is_open_answer`) keeps choices None."""
    if all(r.choices for r in rows) or is_open_answer(rows):
        return rows
    labels = sorted({r.gold for r in rows})
    if len(labels) > MAX_LABELS:  # some rows have options, the others too many labels to list
        raise DistillError(f"{len(labels)} distinct labels and some rows without a choices column: give every "
                           f"row its choices, or none (then it is evaluated open-answer), or use at most "
                           f"{MAX_LABELS} labels")
    for r in rows:
        r.choices = r.choices or labels
    return rows


def check_task(store: Store, task: str) -> None:
    """The one-line error for a task that is neither loadable nor a pool already in the store."""
    try:
        load_task(task)
    except DistillError:
        if not store.prompts(task, limit=1):
            raise


def load_task_pool(store: Store, task: str, run_id: str) -> str:
    """Put the task's rows in the store (idempotent) and return the pool name.

    A name that is no loadable task but a pool already in the store (`distill data load`,
    expanded prompts) is evaluated as it is."""
    try:
        rows = load_task(task)
    except DistillError:
        if store.prompts(task, limit=1):
            return task
        raise
    store.add_prompts(_with_label_choices(rows), pool=task, run_id=run_id)
    return task


def _kd_baseline(store: Store, teacher: Teacher, pool: str, test: list[PromptRow], exemplars: list, run_id: str,
                 max_train: int, seed: int, debias: str = "none",
                 style: str = "mc") -> tuple[Row | None, dict]:
    """A MiniLM + head student trained on the teacher's soft labels (Hinton KD), scored on test."""
    from evals.classic_kd import train_classic_kd

    # Never a few-shot exemplar: its gold answer is in every prompt, itself included.
    shown = {r.id for shots in exemplars for r in shots}
    train = [r for r in store.prompts(pool, split="train") if r.choices and r.id not in shown][:max_train]
    if not train:
        return None, {"skipped": "classic KD learns a distribution over options: this task has none (open answers)"}
    preds = answer_items(store, teacher, train, exemplars, run_id, "teacher", debias=debias, style=style)
    usable = [(r, p) for r, p in zip(train, preds) if "probs" in p["features"]]
    if len(usable) < 10:
        return None, {"skipped": f"the teacher gave option probabilities for {len(usable)} train items (need 10)"}
    student = train_classic_kd([r.input for r, _ in usable], [r.choices for r, _ in usable],
                               [p["features"]["probs"] for _, p in usable], seed=seed)
    probs = student.predict_proba([r.input for r in test], [r.choices for r in test])
    ok = np.array([r.choices[int(np.argmax(p))] == r.gold for r, p in zip(test, probs)], dtype=float)
    acc, low, high = bootstrap_ci(np.mean, ok, seed=seed)
    row = Row(model="classic KD (MiniLM + head)", role="kd-baseline", accuracy=acc, ci_low=low, ci_high=high,
              teacher_share=0.0, n=len(test))
    info = {"teacher": teacher.name, "train_items": len(usable), "temperature": student.config.get("temperature"),
            "alpha": student.config.get("alpha"), "used_gold": student.config.get("used_gold")}
    info["description"] = (f"A classic-KD student (frozen MiniLM embeddings + a small scoring head) trained on "
                           f"{teacher.name}'s option probabilities for {len(usable)} train items, Hinton loss at "
                           f"temperature {info['temperature']} (alpha {info['alpha']}), no human labels; "
                           f"test accuracy {acc:.3f} [{low:.3f}, {high:.3f}].")
    return row, info


def _rationales(store: Store, student: Teacher, teacher: Teacher, test: list[PromptRow], preds: dict,
                n: int, run_id: str, seed: int) -> RationaleFidelity:
    """Rationale similarity on the first `n` test items (each model explains its own answer)."""
    from evals.rationales import rationale_fidelity

    rows = sorted(test, key=lambda r: r.id)[:n]
    answer = {name: {p["prompt_id"]: p["answer"] for p in ps} for name, ps in preds.items()}
    return rationale_fidelity(store, student, teacher, rows, [answer[student.name][r.id] for r in rows],
                              [answer[teacher.name][r.id] for r in rows], run_id, seed=seed)


def _baseline_row(name: str, preds: list[dict], seed: int) -> Row:
    """A report row for another student (e.g. before distillation), scored on the same test prompts."""
    ok = np.array([p["correct"] for p in preds if p["split"] == "test"], dtype=float)
    acc, low, high = bootstrap_ci(np.mean, ok, seed=seed)
    tokens = np.mean([p["tokens"] for p in preds if p["split"] == "test"])
    return Row(model=name, role="student before", accuracy=acc, ci_low=low, ci_high=high, teacher_share=0.0,
               tokens_per_1k=1000 * float(tokens), n=int(ok.size))


def cascade_spec(result: CascadeResult, student: str, teacher: str, task: str) -> dict:
    """What `distill serve --cascade` needs to route like the evaluated cascade (the threshold clipped
    to [0, 1]: confidences are probabilities, so +/-inf means always / never escalate)."""
    return {"version": 1, "models": [student, teacher], "signal": result.signal,
            "calibrators": [result.calibrator], "thresholds": [min(1.0, max(0.0, result.threshold))],
            "task": task}


def evaluate_task(store: Store, task: str, student: Teacher, teachers: list[Teacher], out_dir: str | Path,
                  run_id: str, settings: CascadeSettings | None = None, *, baselines: list[Teacher] | None = None,
                  extra_sections: dict[str, str] | None = None, title: str | None = None) -> TaskEvaluation:
    """Score the cascade of `student` and `teachers` on `task`.

    `baselines` are other students scored on the same prompts and reported beside it (the
    student before distillation); `settings.committee` adds the teachers' averaged option
    distribution as one more teacher (evals.committee); `extra_sections` go into the report as they are.
    """
    cfg = settings or CascadeSettings()
    cfg.check()  # before the task's rows reach the store
    pool = load_task_pool(store, task, run_id)
    calib = store.prompts(pool, split="calibration", limit=cfg.limit)
    test = store.prompts(pool, split="test", limit=cfg.limit)
    if len(calib) < 10 or len(test) < 10:
        raise DistillError(f"task '{task}' has {len(calib)} calibration and {len(test)} test rows: "
                           "need at least 10 of each (raise --limit or use a larger task)")
    exemplars = exemplar_sets(store.prompts(pool, split="train"), cfg.shots, cfg.variants, cfg.seed,
                              balanced=cfg.balanced_shots)
    signal, variants, scoring = cfg.signal, cfg.variants, {"debias": cfg.debias, "style": cfg.prompt_style}
    # The learned head uses every feature the run has: one pass gives five; --variants k adds
    # agreement and --self-verify (or signal verifier) adds the self-check, each at its own cost.
    needs_verify = signal == "verifier" or cfg.self_verify
    preds = {student.name: answer_items(store, student, calib + test, exemplars, run_id, "student",
                                        self_verify=needs_verify, **scoring)}
    for p in preds[student.name]:  # count what the deployed cascade would run for this signal
        # auto may pick a signal that needs every variant: count them all (an upper bound).
        if signal != "agreement" and not (signal in ("learned", "auto") and variants > 1):
            p["tokens"], p["latency_s"] = p["tokens"] // max(1, variants), p["latency_s"] / max(1, variants)
        p["tokens"] += p.get("tokens_verify", 0)
    for t in teachers:
        preds[t.name] = answer_items(store, t, calib + test, exemplars, run_id, "teacher", **scoring)
    teacher_names, prices = [t.name for t in teachers], dict(cfg.prices)
    if cfg.committee and can_form_committee([preds[n] for n in teacher_names]):
        name = committee_name(teacher_names)
        preds[name] = committee_predictions([preds[n] for n in teacher_names], calib + test)
        if prices and all(n in prices for n in teacher_names):  # a committee call pays every member
            paid = {n: sum(p["tokens"] for p in preds[n]) for n in teacher_names}
            prices[name] = sum(prices[n] * paid[n] for n in paid) / max(1, sum(paid.values()))
        teacher_names.append(name)
    baseline_preds = {b.name: answer_items(store, b, calib + test, exemplars, run_id, "student", **scoring)
                      for b in baselines or []}
    slice_of = {r.id: r.gold for r in calib + test} if len({r.gold for r in test}) <= 12 else {}
    fitting = dict(signal=signal, calibration=cfg.calibration, target_accuracy=cfg.target_accuracy,
                   max_teacher_share=cfg.max_teacher_share, max_cost_per_1k=cfg.max_cost_per_1k, delta=cfg.delta,
                   prices=prices, seed=cfg.seed)
    result = analyse(preds, student.name, teacher_names, slice_of=slice_of, **fitting)
    # A committee teacher is made of the real ones: the KD baseline and rationales use the best member.
    teacher = next((t for t in teachers if t.name == result.cascade_teacher), None) or max(
        teachers, key=lambda t: float(np.mean([p["correct"] for p in preds[t.name] if p["split"] == "calibration"])))
    result.rows[1:1] = [_baseline_row(name, ps, cfg.seed) for name, ps in baseline_preds.items()]
    # The same cascade fitted for each other student: what routing bought before distillation.
    for name, ps in baseline_preds.items():
        others = [t for t in teacher_names if t != name]  # a student never escalates to itself
        if others:
            base = analyse({name: ps, **{t: preds[t] for t in others}}, name, others, **fitting)
            result.baseline_cascades[name] = BaselineCascade(base.signal, base.cascade_teacher,
                                                             base.cascade_vs_random, base.curve_vs_random, base.rows)
    signal = result.signal  # auto: the signal chosen on calibration
    if cfg.kd_baseline:
        row, result.kd_baseline = _kd_baseline(store, teacher, pool, test, exemplars, run_id, cfg.kd_train, cfg.seed,
                                               cfg.debias, cfg.prompt_style)
        if row:
            result.rows.append(row)
    if cfg.rationales > 0:
        result.fidelity.rationales = _rationales(store, student, teacher, test, preds, cfg.rationales, run_id,
                                                 cfg.seed)
    if cfg.resplits and cfg.target_accuracy is not None:
        result.resplits = resplit_hold_rate(preds[student.name], preds[teacher.name], cfg.target_accuracy,
                                            signal=cfg.signal, calibration=cfg.calibration, delta=cfg.delta,
                                            n=cfg.resplits, seed=cfg.seed)
    result.task, result.split_sizes = task, {"calibration": len(calib), "test": len(test)}
    out_dir = Path(out_dir)
    report = write_cascade_report(result, out_dir, title or f"Cascade on {task}", extra_sections)
    spec_path = out_dir / "cascade.json"
    spec_path.write_text(json.dumps(cascade_spec(result, student.name, teacher.name, task), indent=1) + "\n")
    eval_id = f"eval-{run_id}"
    rows_out = [dict(prompt_id=p["prompt_id"], split=p["split"], request_key=p["request_key"], answer=p["answer"],
                     correct=p["correct"], confidence=p["features"].get(signal), tokens=p["tokens"],
                     eval_id=eval_id, model=name) for name, ps in {**preds, **baseline_preds}.items() for p in ps]
    store.add_eval(eval_id, run_id, task, "test", {"student": student.name, "teachers": teacher_names,
                   "baselines": list(baseline_preds), "signal": signal, "signal_requested": cfg.signal,
                   "calibration": cfg.calibration, "shots": cfg.shots, "balanced_shots": cfg.balanced_shots,
                   "debias": cfg.debias, "prompt_style": cfg.prompt_style, "variants": variants,
                   "cascade_spec": str(spec_path)}, result.to_dict(), str(report), rows_out)
    return TaskEvaluation(report=report, result=result, cascade_spec=spec_path)
