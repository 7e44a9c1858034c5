"""Report people read for a full cascade analysis (``evals.analysis.analyse``).

Writes report.md, four PNGs (cost-quality curve, reliability before/after calibration,
risk-coverage, per-slice bars) and results.json beside them. Nothing is computed here
beyond unit conversions; every number comes from the typed result (evals.results). Any metric
value may be None or NaN (undefined metric, field a row does not have): it renders as "n/a".
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

from evals.formatting import cell, missing, num, pct
from evals.results import (
    CascadeResult,
    ConfidenceQuality,
    Fit,
    Interval,
    RationaleFidelity,
    Resplits,
    Row,
    VersusRandom,
)

matplotlib.use("Agg")  # headless: reports are written on servers without a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402


TOP_SLICES_PLOT = 15
TOP_SLICES_TABLE = 30
OTHER_COLOURS = ["tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]


def _f(x: Any) -> float:  # for plotting: None and infinities become NaN, which matplotlib leaves out
    return math.nan if missing(x) else float(x)


def _ci(m: Interval | None, fmt: Callable[[Any], str] = num) -> str:
    """'value [low, high]', or the value alone when the interval is missing."""
    m = m or Interval()
    value, low, high = fmt(m.value), fmt(m.ci_low), fmt(m.ci_high)
    return value if "n/a" in (value, low, high) else f"{value} [{low}, {high}]"


def _acc(row: Row | None) -> str:  # rows keep their CI beside "accuracy"
    return "n/a" if row is None else _ci(Interval(row.accuracy, row.ci_low, row.ci_high), pct)


def _money(x: Any) -> str:  # per-1k costs span fractions of a cent (students) to $100s (API teachers)
    return "n/a" if missing(x) else format(x, ",.0f" if abs(x) >= 100 else ".2f" if abs(x) >= 1 else ".4f")


def _threshold_words(result: CascadeResult) -> str:  # starts a sentence of the summary
    thr = result.threshold
    if thr == -math.inf:
        return "No query is escalated (the fitted threshold is -inf, so the student answers everything)"
    if thr == math.inf:
        return "Every query is escalated (the fitted threshold is +inf, so the teacher answers everything)"
    if missing(thr):
        return "The escalation threshold is n/a"
    return f"A query is escalated when the student's calibrated confidence is below {thr:.3g}"


def _goal_words(fit: Fit) -> str:
    wording = {"target_accuracy": lambda v: f"target accuracy {pct(v)}",
               "max_teacher_share": lambda v: f"at most {pct(v)} teacher calls",
               "max_cost_per_1k": lambda v: f"at most ${v:g} per 1k queries"}
    goal = [say(getattr(fit, k)) for k, say in wording.items() if not missing(getattr(fit, k))]
    if not missing(fit.target_accuracy) and not missing(fit.delta):
        goal[0] += f" with a Learn-then-Test guarantee at delta = {fit.delta:g}"
        g = fit.chosen.get("guarantee") or {}
        if g.get("batch_size"):
            goal[0] += (f" for a batch of {g['batch_size']} queries (tested at {g['level']:g} against "
                        f"{pct(g['tested_accuracy'])}, leaving room for the batch's own noise)")
    text = ", ".join(goal) or "maximise accuracy"
    if fit.chosen.get("reached") is False:
        text += "; the target was not reached on calibration, so the most accurate point was used"
    return text


def _versus_random(cvr: VersusRandom) -> str:
    # Only an interval entirely above zero earns "beats": a positive point estimate alone is noise.
    diff, low, high = cvr.difference, cvr.ci_low, cvr.ci_high
    pts = [("n/a" if missing(x) else f"{100 * x:+.1f}") for x in (diff, low, high)]
    interval = f"{pts[0]} accuracy points, 95% CI [{pts[1]}, {pts[2]}]"
    if missing(diff):
        return "the comparison with random routing at the same teacher share is n/a"
    if not missing(low) and low > 0:
        return f"it beats random routing at the same teacher share ({interval}, excluding zero)"
    if not missing(high) and high < 0:
        return f"it does worse than random routing at the same teacher share ({interval})"
    return f"it does not clearly differ from random routing at the same teacher share ({interval}, includes zero)"


def _selection_words(result: CascadeResult) -> str:
    sel = result.signal_selection
    if not sel or not sel.get("calibration_auroc"):
        return ""
    ranked = sorted(sel["calibration_auroc"].items(), key=lambda kv: -kv[1])
    return (" (picked by `--signal auto`: the highest error-detection AUROC on the calibration split; "
            + ", ".join(f"{k} {v:.3f}" for k, v in ranked) + ")")


def _summary(result: CascadeResult, title: str) -> str:
    casc = result.row("cascade")
    method = result.fit.calibration_method or result.calibrator.get("method") or "n/a"
    return (
        f"**Task:** {result.task or title}. The student `{result.student}` answers every "
        f"query first; its confidence is the `{result.signal or 'n/a'}` signal{_selection_words(result)}, "
        f"calibrated with "
        f"`{method}` on the calibration split. {_threshold_words(result)}; escalated queries "
        f"go to `{result.cascade_teacher}`, the most accurate teacher on the calibration split. "
        f"The threshold was fitted on the calibration split only (goal: {_goal_words(result.fit)}). On the "
        f"held-out test split (n={result.n_test}) the cascade reaches {_acc(casc)} "
        f"accuracy with {pct(casc and casc.teacher_share)} of queries sent to the teacher, and "
        f"{_versus_random(result.cascade_vs_random)}."
    )


def _main_table(result: CascadeResult) -> list[str]:
    lines = ["| model | role | accuracy [95% CI] | teacher calls | tokens/1k | cost/1k USD | latency/1k s |",
             "|---|---|---|---|---|---|---|"]
    for r in result.rows:
        lines.append(f"| {cell(r.model)} | {cell(r.role)} | {_acc(r)} "
                     f"| {pct(r.teacher_share)} | {num(r.tokens_per_1k, ',.0f')} "
                     f"| {_money(r.cost_per_1k_usd)} | {num(r.latency_per_1k_s, ',.1f')} |")
    prices = result.prices_per_1m_tokens
    price_text = ", ".join(f"`{m}` ${p:g}" for m, p in prices.items() if not missing(p)) or "none given"
    return lines + [
        ("\nTeacher calls is the share of queries sent to a teacher; tokens, cost and latency are per "
        "1,000 queries, student and teacher together. Random routing sends the cascade's share of "
        "queries to the teacher at random; oracle routing escalates exactly the queries the student "
        f"gets wrong (an upper bound no real signal reaches). Prices per 1M tokens: {price_text}."),
    ]


def _routing_table(result: CascadeResult) -> list[str]:
    def get(key):  # the interval if bootstrapped, else the bare point estimate
        return result.metric_cis.get(key) or Interval(getattr(result, key))
    return [
        "| metric | value [95% CI] | what it means |", "|---|---|---|",
        (f"| gain over random, whole curve | {_ci(result.curve_vs_random)} | mean accuracy of the "
         "cascade minus random routing over every teacher share (least confident escalated first); 0 = "
         "no better than random |"),
        (f"| APGR | {_ci(get('apgr'))} | average share of the student-to-teacher gap recovered over all "
        "teacher shares; 0.5 = random routing, higher is better |"),
        f"| CPT(50%) | {_ci(get('cpt_50'), pct)} | teacher calls needed to recover half the gap; lower is better |",
        f"| CPT(80%) | {_ci(get('cpt_80'), pct)} | teacher calls needed to recover 80% of the gap |",
        ("\nn/a means the teacher is not more accurate than the student on test (no gap to recover) "
        "or the cascade never recovers that fraction."),
    ]


def _confidence_table(result: CascadeResult) -> list[str]:
    before, after = (result.confidence_quality.get(k) or ConfidenceQuality() for k in ("before", "after"))
    lines = ["| metric | before calibration | after calibration | better |", "|---|---|---|---|"]
    for key, name, better in (("ece", "ECE (10 equal-mass bins)", "lower"), ("brier", "Brier score", "lower"),
                              ("auroc", "AUROC, right vs wrong answers", "higher (0.5 = chance)")):
        lines.append(f"| {name} | {_ci(getattr(before, key))} | {_ci(getattr(after, key))} | {better} |")
    return lines + [
        (f"\nAURC (area under the risk-coverage curve of the calibrated confidence; lower is better): "
        f"{num(result.aurc)}. Calibration fixes what the confidence *says* (ECE, Brier); "
        "a monotone calibrator cannot change how well it *ranks* answers (AUROC, AURC)."),
    ]


def _fidelity(result: CascadeResult) -> list[str]:
    fid = result.fidelity
    teacher = fid.teacher or result.cascade_teacher
    right = pct(fid.agreement_when_teacher_right)
    return [(f"The student gives the same answer as `{teacher}` on {_ci(fid.answer_agreement, pct)} of "
             f"test items, and on {right} of the items the teacher gets right.")] + _rationale_lines(fid.rationales)


def _rationale_lines(rat: RationaleFidelity | None) -> list[str]:
    if rat is None:
        return []
    empty = ", ".join(f"{who} {n}" for who, n in rat.empty_explanations.items())
    lines = [(f"\nRationale similarity (each model explains its own answer; cosine of `{rat.model}` "
              f"embeddings, {rat.n} test items): {_ci(rat.similarity)} overall, "
              f"{_ci(rat.when_answers_agree)} when the answers agree (n={rat.when_answers_agree.n}), "
              f"{_ci(rat.when_answers_differ)} when they differ (n={rat.when_answers_differ.n}). "
              f"Empty explanations score 0: {empty}."), "", "| input | student | teacher | similarity |",
             "|---|---|---|---|"]
    for ex in rat.examples:
        lines.append(f"| {cell(ex.input)} | **{cell(ex.student_answer)}**: {cell(ex.student)} "
                     f"| **{cell(ex.teacher_answer)}**: {cell(ex.teacher)} | {num(ex.similarity)} |")
    return lines


def _slices_table(result: CascadeResult) -> list[str]:
    slices = sorted(result.slices, key=lambda s: -s.n)
    lines = ["| slice | n | student | teacher | cascade |", "|---|---|---|---|---|"]
    for s in slices[:TOP_SLICES_TABLE]:
        lines.append(f"| {cell(s.slice)} | {num(s.n, ',.0f')} "
                     f"| {pct(s.student)} | {pct(s.teacher)} | {pct(s.cascade)} |")
    if len(slices) > TOP_SLICES_TABLE:
        lines.append(f"\nThe {len(slices) - TOP_SLICES_TABLE} smaller slices are in results.json.")
    return lines


def _resplits(rs: Resplits) -> list[str]:
    n = num(rs.n, ",.0f")
    promise = "" if missing(rs.delta) else (f" With delta = {rs.delta:g} the guarantee (Learn-then-Test plus the "
                                             f"test half's binomial noise) promises a rate of at least "
                                             f"{pct(1 - rs.delta)}.")
    certified = sum(bool(r.reached_on_calibration) for r in rs.runs)
    fallback = ("" if not rs.runs or certified == len(rs.runs) else
                f" The target was certified on the calibration half in {certified} of them; the others fell back "
                "to the most accurate point, which carries no guarantee.")
    return [(f"Calibration and test items were pooled and re-split at random {n} times, refitting everything on "
            f"one half each time. The target accuracy {pct(rs.target_accuracy)} held on the other half "
            f"in {num(rs.hits, ',.0f')} of {n} re-splits ({pct(rs.rate)}).{promise}{fallback}")]


def _markdown(result: CascadeResult, title: str, extra_sections: dict[str, str] | None) -> str:
    sections = [
        (None, [_summary(result, title)]),
        ("Results on the test split", _main_table(result) + ["\n![Accuracy vs teacher calls and cost](cascade.png)"]),
        ("Routing quality", _routing_table(result)),
        ("Student confidence", _confidence_table(result) + ["\n![Reliability, before and after](reliability.png)",
                                                            "\n![Risk vs coverage](risk_coverage.png)"]),
        ("Fidelity to the teacher", _fidelity(result)),
        ("Slices", _slices_table(result) + ["\n![Accuracy per slice](slices.png)"]),
    ]
    if result.resplits:
        sections.append(("Does the accuracy target hold on new data?", _resplits(result.resplits)))
    if result.kd_baseline:
        sections.append(("Classic KD baseline", [str(result.kd_baseline.get("description") or "n/a")]))
    sections.append(("Data", ["Every number above, with the full curves, is in [results.json](results.json)."]))
    sections += [(h, [body.rstrip()]) for h, body in (extra_sections or {}).items()]
    lines = [f"# {title}", ""]
    for heading, body in sections:
        lines += ([f"## {heading}", ""] if heading else []) + body + [""]
    return "\n".join(lines)


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in this result", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _save(fig, path: Path, bottom: float = 0.0) -> None:
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_cascade(result: CascadeResult, title: str, path: Path) -> None:
    rows, curve, n = result.rows, result.curve, result.n_test or math.nan
    student = result.row("student")
    teacher = next((r for r in result.rows_of("teacher") if r.model == result.cascade_teacher), None)
    prices = result.prices_per_1m_tokens
    p_s, p_t = (prices.get(m) or 0.0 for m in (result.student, result.cascade_teacher))  # None: unpriced
    # Cost when the cascade's models are priced, else tokens: unpriced local models only cost compute.
    use_cost = p_s + p_t > 0
    key = "cost_per_1k_usd" if use_cost else "tokens_per_1k"
    # The curve stores totals over the test split; convert them to the rows' per-1k-queries units.
    tok, t_tok = ([_f(p.get(k)) for p in curve] for k in ("tokens", "teacher_tokens"))
    curve_x = [1000 / n * (((a - b) * p_s + b * p_t) / 1e6 if use_cost else a) for a, b in zip(tok, t_tok)]
    # One marker style per row, fixed before plotting so both panels agree.
    style = [{"student": ("o", "black"), "oracle": ("D", "tab:green")}.get(r.role)
             or ("s^vP<>X"[i % 7], OTHER_COLOURS[i % 6]) for i, r in enumerate(rows)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for ax, xkey, xs in ((axes[0], "teacher_share", [_f(p.get("teacher_share")) for p in curve]),
                         (axes[1], key, curve_x)):
        ax.plot(xs, [_f(p.get("accuracy")) for p in curve], color="tab:blue", lw=1.8,
                label="cascade, every threshold (test)")
        # Random routing is linear in the teacher share, hence also in tokens and cost:
        # from the student alone to student + teacher on every query.
        x0 = 0.0 if ax is axes[0] else _f(getattr(student, key, None))
        x1 = 1.0 if ax is axes[0] else x0 + _f(getattr(teacher, key, None))
        ax.plot([x0, x1], [_f(student and student.accuracy), _f(teacher and teacher.accuracy)], ls="--",
                color="gray", label="random routing")
        for r, (marker, colour) in zip(rows, style):
            x, y, role = _f(getattr(r, xkey)), _f(r.accuracy), r.role
            if role == "random" or math.isnan(x) or math.isnan(y):
                continue  # random routing is the dashed line; a row without x cannot be placed
            if role == "cascade":
                err = [[y - _f(r.ci_low)], [_f(r.ci_high) - y]]
                ax.errorbar(x, y, yerr=None if math.isnan(err[0][0] + err[1][0]) else err, fmt="*", ms=15,
                            color="tab:red", capsize=4, zorder=5, label="cascade at fitted threshold (95% CI)")
            else:
                ax.plot(x, y, marker, ms=8, color=colour, label=f"{role}: {r.model}")
        ax.grid(alpha=0.3)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes[0].xaxis.set_major_formatter(PercentFormatter(1.0))
    axes[0].set(xlabel="share of queries sent to the teacher", ylabel="accuracy (test split)",
                title="accuracy vs teacher calls")
    axes[1].set(xlabel="USD per 1k queries" if use_cost else "tokens per 1k queries",
                title=f"accuracy vs {'cost' if use_cost else 'tokens'}")
    # One legend under both panels (inside, it would hide the teachers at 100% teacher calls);
    # merged by label so a row placed in only one panel still appears.
    handles = {lab: h for ax in axes for h, lab in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=4, fontsize=8)
    fig.suptitle(title)
    _save(fig, path, bottom=0.16)


def _plot_reliability(result: CascadeResult, title: str, path: Path) -> None:
    method = result.fit.calibration_method or "calibrator"
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))
    for ax, (key, label) in zip(axes, (("before", "before calibration (raw signal)"),
                                       ("after", f"after calibration ({method})"))):
        part = result.confidence_quality.get(key) or ConfidenceQuality()
        bins = [b for b in part.bins or []
                if not (missing(b.get("confidence")) or missing(b.get("accuracy")))]
        if not bins:
            _no_data(ax, f"reliability bins {key} calibration")
            continue
        conf, acc = [b["confidence"] for b in bins], [b["accuracy"] for b in bins]
        ax.plot([0, 1], [0, 1], ls="--", color="gray", label="perfect calibration")
        ax.vlines(conf, conf, acc, color="tab:red", alpha=0.5, lw=2, label="gap (miscalibration)")
        ax.plot(conf, acc, "o-", color="tab:blue", ms=6, label="student, equal-mass bins")
        # Bin counts on a twin axis squeezed into the bottom quarter: they show where the
        # confidences pile up without hiding the diagonal.
        twin, counts = ax.twinx(), [b.get("count") or 0 for b in bins]
        twin.bar(conf, counts, width=0.02, color="gray", alpha=0.35)
        twin.set(ylim=(0, 4 * max(max(counts), 1)), ylabel="items in bin")
        ax.set_zorder(twin.get_zorder() + 1)  # points and diagonal over the count bars
        ax.patch.set_visible(False)
        ax.set(xlim=(-0.01, 1.02), ylim=(-0.01, 1.02), xlabel="mean confidence in bin", ylabel="accuracy in bin",
               title=f"{label}\nECE {_ci(part.ece)}")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=7)
    fig.suptitle(title)
    _save(fig, path)


def _plot_risk_coverage(result: CascadeResult, title: str, path: Path) -> None:
    pts = [p for p in result.risk_coverage or []
           if not (missing(p.get("coverage")) or missing(p.get("risk")))]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    if not pts:
        _no_data(ax, "risk-coverage curve")
    else:
        ax.plot([p["coverage"] for p in pts], [p["risk"] for p in pts], color="tab:blue", lw=1.8,
                label=f"student, answering its most confident items (AURC {num(result.aurc)})")
        ax.axhline(pts[-1]["risk"], ls="--", color="gray", label="error rate answering everything")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(PercentFormatter(1.0))
        ax.set(xlim=(0, 1.01), ylim=(0, None), xlabel="coverage (share of items the student answers)",
               ylabel="risk (error rate on answered items)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
    ax.set_title(f"{title}\nrisk vs coverage (lower curve is better)")
    _save(fig, path)


def _plot_slices(result: CascadeResult, title: str, path: Path) -> None:
    slices = sorted(result.slices, key=lambda s: -s.n)[:TOP_SLICES_PLOT]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(slices) + 2), 4.8))
    if not slices:
        _no_data(ax, "slices")
    else:
        width = 0.27
        for k, (key, colour) in enumerate((("student", "black"), ("teacher", "tab:orange"), ("cascade", "tab:red"))):
            ax.bar([i + (k - 1) * width for i in range(len(slices))], [_f(getattr(s, key)) for s in slices],
                   width=width, color=colour, alpha=0.8, label=key)
        ax.set_xticks(range(len(slices)))  # long slice names are cut: the table has them whole
        ax.set_xticklabels([f"{s.slice[:24]}\n(n={s.n})" for s in slices], rotation=30,
                           ha="right", fontsize=8)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set(ylim=(0, 1.15), ylabel="accuracy (test split)")  # headroom for the legend
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8, ncol=3, loc="upper center")
    ax.set_title(f"{title}\naccuracy per slice (up to {TOP_SLICES_PLOT} largest)")
    _save(fig, path)


def write_cascade_report(result: CascadeResult, out_dir: Path, title: str,
                         extra_sections: dict[str, str] | None = None) -> Path:
    """Write results.json, report.md and cascade/reliability/risk_coverage/slices PNGs; return report.md."""
    (out_dir := Path(out_dir)).mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n")
    for plot, name in ((_plot_cascade, "cascade.png"), (_plot_reliability, "reliability.png"),
                       (_plot_risk_coverage, "risk_coverage.png"), (_plot_slices, "slices.png")):
        plot(result, title, out_dir / name)
    path = out_dir / "report.md"
    path.write_text(_markdown(result, title, extra_sections))
    return path
