"""The demo's own report sections: data, curation funnel, distillation, savings, timings.

Everything else in the report (rows with intervals, cascade vs random, plots) is the
cascade evaluator's report (evals.report); these sections only add what the demo
alone knows, read from its stage results.
"""
from __future__ import annotations

from typing import Any

from evals.formatting import pct


def _acc(row: dict) -> str:
    return f"{pct(row.get('accuracy'))} [{pct(row.get('ci_low'))}, {pct(row.get('ci_high'))}]"


def _row(result: dict, role: str) -> dict:
    return next((r for r in result.get("rows", []) if r.get("role") == role), {})


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


def distillation_text(trained: dict, result: dict) -> str:
    before, after = _row(result, "student before"), _row(result, "student")
    losses = trained.get("losses") or []
    curve = f"loss {losses[0]:.3f} → {losses[-1]:.3f} over {len(losses)} logged steps" if losses else "no loss logged"
    diff = (after.get("accuracy") or 0) - (before.get("accuracy") or 0)
    return (f"TRL `SFTTrainer` fine-tuned `{trained.get('student')}` for {trained.get('steps')} steps on "
            f"{trained.get('rows')} purified teacher answers ({curve}). On the held-out test split, same prompt "
            f"format: before distillation {_acc(before)}, after {_acc(after)} ({100 * diff:+.1f} points).")


def savings_text(result: dict) -> str:
    """Teacher calls and cost per 1,000 queries the cascade saves against sending everything to the teacher."""
    casc = _row(result, "cascade")
    teacher = next((r for r in result.get("rows", []) if r.get("role") == "teacher"
                    and r.get("model") == result.get("cascade_teacher")), {})
    share = casc.get("teacher_share") or 0.0
    saved_calls = 1000 * (1 - share)
    cost_t, cost_c = teacher.get("cost_per_1k_usd"), casc.get("cost_per_1k_usd")
    cost = (f" and ${cost_t - cost_c:,.4f} of ${cost_t:,.4f} per 1,000 queries at the listed prices"
            if cost_t is not None and cost_c is not None and cost_t > 0 else "")
    cvr = result.get("cascade_vs_random") or {}
    low, high, diff = cvr.get("ci_low"), cvr.get("ci_high"), cvr.get("difference")
    verdict = ("**beat** random routing at the same teacher share" if low is not None and low > 0 else
               "did **not** beat random routing at the same teacher share (the interval includes or is below zero)")
    lines = [f"Against teacher-only (`{result.get('cascade_teacher')}` answering everything, {_acc(teacher)}), the "
             f"cascade of the distilled student ({_acc(casc)}) sends {pct(share)} of queries to the teacher: it saves "
             f"{saved_calls:,.0f} teacher calls per 1,000 queries{cost}. It {verdict}: "
             f"{100 * (diff or 0):+.1f} points, 95% CI [{100 * (low or 0):+.1f}, {100 * (high or 0):+.1f}]."]
    for name, base in (result.get("baseline_cascades") or {}).items():
        b_casc = next((r for r in base["rows"] if r.get("role") == "cascade"), {})
        b_teacher = next((r for r in base["rows"] if r.get("role") == "teacher"
                          and r.get("model") == base.get("cascade_teacher")), {})
        b_share = b_casc.get("teacher_share") or 0.0
        b_cost = ""
        if b_teacher.get("cost_per_1k_usd") and b_casc.get("cost_per_1k_usd") is not None:
            b_cost = (f" and ${b_teacher['cost_per_1k_usd'] - b_casc['cost_per_1k_usd']:,.4f} of "
                      f"${b_teacher['cost_per_1k_usd']:,.4f}")
        lines.append(f"Before distillation, the cascade of `{name}` ({_acc(b_casc)}) against teacher-only "
                     f"(`{base.get('cascade_teacher')}`, {_acc(b_teacher)}) sends {pct(b_share)} of queries to the "
                     f"teacher: it saves {1000 * (1 - b_share):,.0f} teacher calls{b_cost} per 1,000 queries.")
    return "\n\n".join(lines)


def _cascade_line(label: str, cvr: dict, curve: dict) -> str:
    low, high, diff = cvr.get("ci_low"), cvr.get("ci_high"), cvr.get("difference")
    beat = "**beats**" if low is not None and low > 0 else "does **not** beat"
    return (f"- {label}: {beat} random routing at the same teacher share ({pct(cvr.get('teacher_share'))} "
            f"teacher calls): {100 * (diff or 0):+.1f} points, 95% CI [{100 * (low or 0):+.1f}, "
            f"{100 * (high or 0):+.1f}]; averaged over every teacher share {100 * (curve.get('value') or 0):+.1f} "
            f"[{100 * (curve.get('ci_low') or 0):+.1f}, {100 * (curve.get('ci_high') or 0):+.1f}].")


def cascades_text(result: dict) -> str:
    """Both cascades, fitted the same way on calibration: from the distilled student and from the original one."""
    lines = [_cascade_line(f"distilled student → `{result.get('cascade_teacher')}`", result.get("cascade_vs_random")
                           or {}, result.get("curve_vs_random") or {})]
    for name, base in (result.get("baseline_cascades") or {}).items():
        casc = next((r for r in base["rows"] if r.get("role") == "cascade"), {})
        lines.append(_cascade_line(f"`{name}` before distillation → `{base['cascade_teacher']}` (cascade accuracy "
                                   f"{_acc(casc)}, signal `{base['signal']}`)", base["cascade_vs_random"],
                                   base["curve_vs_random"]))
    after, teacher = _row(result, "student"), max((r for r in result.get("rows", []) if r.get("role") == "teacher"),
                                                  key=lambda r: r.get("accuracy") or 0, default={})
    if (after.get("accuracy") or 0) > (teacher.get("accuracy") or 0):
        lines.append(f"\nAfter distillation the student ({_acc(after)}) is more accurate than the best teacher "
                     f"(`{teacher.get('model')}`, {_acc(teacher)}): a student-then-teacher cascade has no stronger "
                     "model to escalate to, so routing it cannot add much; the cascade that matters here is the "
                     "one of the original student, and distillation beats it.")
    return "\n".join(lines)


def demo_sections(config: Any, results: dict, trained: dict, result: dict, timings: dict,
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
