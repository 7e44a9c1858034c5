"""The demo's own report sections: data, curation funnel, distillation, savings, timings.

Everything else in the report (rows with intervals, cascade vs random, plots) is the
cascade evaluator's report (evals.report); these sections only add what the demo
alone knows, read from its stage results.
"""
from __future__ import annotations

from typing import Any

from evals.formatting import pct
from evals.results import CascadeResult, Interval, Row, VersusRandom

NO_ROW = Row(model="n/a", role="n/a", accuracy=None, ci_low=None, ci_high=None, teacher_share=None, n=0)


def _acc(row: Row) -> str:
    return f"{pct(row.accuracy)} [{pct(row.ci_low)}, {pct(row.ci_high)}]"


def _row(rows: list[Row], role: str, model: str | None = None) -> Row:
    """The first row with this role (and model, when given); NO_ROW renders as n/a."""
    return next((r for r in rows if r.role == role and model in (None, r.model)), NO_ROW)


def funnel_table(funnel: list[dict], answers: dict) -> str:
    """Traces per teacher through generation, dedup, verification and purification; then the answer stage."""
    lines = ["| teacher | traces generated | unparsed | exact duplicates removed | near duplicates removed "
             "| verified (answer = human label) | picked by purification |", "|---|---|---|---|---|---|---|"]
    keys = ("generated", "unparsed", "exact_duplicates", "near_duplicates", "verified", "picked")
    for f in funnel:
        lines.append(f"| {f['teacher']} | " + " | ".join(str(f[k]) for k in keys) + " |")
    if funnel:
        lines.append("| **all** | " + " | ".join(str(sum(f[k] for f in funnel)) for k in keys) + " |")
    correct = ", ".join(f"`{m}` {n}" for m, n in answers.get("correct", {}).items())
    picked = ", ".join(f"`{m}` {n}" for m, n in sorted(answers.get("picked", {}).items(), key=lambda kv: -kv[1]))
    lines += ["", (f"Answer stage: every teacher answered {answers.get('labelled', 0)} train prompts in the "
                   f"evaluation's prompt format; right answers (vs the human label): {correct}. Purification kept "
                   f"the first verified answer per prompt (committee first, then each teacher): "
                   f"{answers.get('kept', 0)} prompts, plus {answers.get('added_from_traces', 0)} from verified "
                   f"chain-of-thought picks, so the student trains on {answers.get('rows', 0)} rows. "
                   f"Which source purification picked: {picked or 'none'}.")]
    return "\n".join(lines)


def distillation_text(trained: dict, result: CascadeResult) -> str:
    before, after = _row(result.rows, "student before"), _row(result.rows, "student")
    losses = trained.get("losses") or []
    curve = f"loss {losses[0]:.3f} → {losses[-1]:.3f} over {len(losses)} logged steps" if losses else "no loss logged"
    diff = (after.accuracy or 0) - (before.accuracy or 0)
    return (f"TRL `SFTTrainer` fine-tuned `{trained.get('student')}` for {trained.get('steps')} steps on "
            f"{trained.get('rows')} purified teacher answers ({curve}). On the held-out test split, same prompt "
            f"format: before distillation {_acc(before)}, after {_acc(after)} ({100 * diff:+.1f} points).")


def savings_text(result: CascadeResult) -> str:
    """Teacher calls and cost per 1,000 queries the cascade saves against sending everything to the teacher."""
    casc = _row(result.rows, "cascade")
    teacher = _row(result.rows, "teacher", result.cascade_teacher)
    share = casc.teacher_share or 0.0
    saved_calls = 1000 * (1 - share)
    cost_t, cost_c = teacher.cost_per_1k_usd, casc.cost_per_1k_usd
    cost = (f" and ${cost_t - cost_c:,.4f} of ${cost_t:,.4f} per 1,000 queries at the listed prices"
            if cost_t is not None and cost_c is not None and cost_t > 0 else "")
    cvr = result.cascade_vs_random
    low, high, diff = cvr.ci_low, cvr.ci_high, cvr.difference
    verdict = ("**beat** random routing at the same teacher share" if low is not None and low > 0 else
               "did **not** beat random routing at the same teacher share (the interval includes or is below zero)")
    lines = [f"Against teacher-only (`{result.cascade_teacher}` answering everything, {_acc(teacher)}), the "
             f"cascade of the distilled student ({_acc(casc)}) sends {pct(share)} of queries to the teacher: it saves "
             f"{saved_calls:,.0f} teacher calls per 1,000 queries{cost}. It {verdict}: "
             f"{100 * (diff or 0):+.1f} points, 95% CI [{100 * (low or 0):+.1f}, {100 * (high or 0):+.1f}]."]
    for name, base in result.baseline_cascades.items():
        b_casc = _row(base.rows, "cascade")
        b_teacher = _row(base.rows, "teacher", base.cascade_teacher)
        b_share = b_casc.teacher_share or 0.0
        b_cost = ""
        if b_teacher.cost_per_1k_usd and b_casc.cost_per_1k_usd is not None:
            b_cost = (f" and ${b_teacher.cost_per_1k_usd - b_casc.cost_per_1k_usd:,.4f} of "
                      f"${b_teacher.cost_per_1k_usd:,.4f}")
        lines.append(f"Before distillation, the cascade of `{name}` ({_acc(b_casc)}) against teacher-only "
                     f"(`{base.cascade_teacher}`, {_acc(b_teacher)}) sends {pct(b_share)} of queries to the "
                     f"teacher: it saves {1000 * (1 - b_share):,.0f} teacher calls{b_cost} per 1,000 queries.")
    return "\n\n".join(lines)


def _cascade_line(label: str, cvr: VersusRandom, curve: Interval) -> str:
    low, high, diff = cvr.ci_low, cvr.ci_high, cvr.difference
    beat = "**beats**" if low is not None and low > 0 else "does **not** beat"
    return (f"- {label}: {beat} random routing at the same teacher share ({pct(cvr.teacher_share)} "
            f"teacher calls): {100 * (diff or 0):+.1f} points, 95% CI [{100 * (low or 0):+.1f}, "
            f"{100 * (high or 0):+.1f}]; averaged over every teacher share {100 * (curve.value or 0):+.1f} "
            f"[{100 * (curve.ci_low or 0):+.1f}, {100 * (curve.ci_high or 0):+.1f}].")


def cascades_text(result: CascadeResult) -> str:
    """Both cascades, fitted the same way on calibration: from the distilled student and from the original one."""
    lines = [_cascade_line(f"distilled student → `{result.cascade_teacher}`", result.cascade_vs_random,
                           result.curve_vs_random)]
    for name, base in result.baseline_cascades.items():
        casc = _row(base.rows, "cascade")
        lines.append(_cascade_line(f"`{name}` before distillation → `{base.cascade_teacher}` (cascade accuracy "
                                   f"{_acc(casc)}, signal `{base.signal}`)", base.cascade_vs_random,
                                   base.curve_vs_random))
    after = _row(result.rows, "student")
    teacher = max(result.rows_of("teacher"), key=lambda r: r.accuracy or 0, default=NO_ROW)
    if (after.accuracy or 0) > (teacher.accuracy or 0):
        lines.append(f"\nAfter distillation the student ({_acc(after)}) is more accurate than the best teacher "
                     f"(`{teacher.model}`, {_acc(teacher)}): a student-then-teacher cascade has no stronger "
                     "model to escalate to, so routing it cannot add much; the cascade that matters here is the "
                     "one of the original student, and distillation beats it.")
    return "\n".join(lines)


def demo_sections(config: Any, results: dict, trained: dict, result: CascadeResult, timings: dict,
                  task_why: str) -> dict[str, str]:
    data = results["data"]
    return {
        "Demo: task and data": (f"Task `{config.task}` (human labels), split by hashed id: {data['splits']}. "
                                f"Calibration and test use up to {config.eval_prompts} prompts each. "
                                f"Test rows never reach teacher prompts, training data or threshold fitting. "
                                f"Why this task: {task_why}"),
        "Demo: curation funnel": funnel_table(results.get("funnel") or [], results.get("distill data") or {}),
        "Demo: distillation (student before and after)": distillation_text(trained, result),
        "Demo: cascade vs random routing, before and after distillation": cascades_text(result),
        "Demo: what the cascade saves": savings_text(result),
        "Demo: stage timings (seconds)": "\n".join(f"- {k}: {v}" for k, v in timings.items()),
    }
