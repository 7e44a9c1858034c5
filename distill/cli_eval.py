"""`distill eval cascade`: flags and the command (the function behind it is evals.task_eval)."""
from __future__ import annotations

import argparse

from clients.device import DEVICE_ENV, DEVICE_HELP
from core.errors import DistillError
from core.flags import integer, number
from evals.calibrate import METHODS
from evals.results import CascadeResult, Interval
from evals.signals import DEBIAS, PROMPT_STYLES, SIGNALS
from evals.settings import CascadeSettings


def add_cascade_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cascade (distill eval cascade)")
    g.add_argument("--task", help="a task from `distill data list` (e.g. arc_easy, sst2, mmlu:astronomy), "
                   "or a labelled .jsonl/.csv/.parquet file (input, label[, choices])")
    g.add_argument("--signal", default="auto", choices=(*SIGNALS, "auto"),
                   help="student confidence signal; auto picks the best on the calibration split (AUROC)")
    g.add_argument("--calibration", default="platt", choices=METHODS, help="calibrator fitted on the calibration split")
    g.add_argument("--max-teacher-share", type=number(0, 1), help="teacher-call budget (share of queries)")
    g.add_argument("--max-cost-per-1k", type=number(0), help="cost budget in USD per 1,000 queries (needs --price)")
    g.add_argument("--delta", type=number(0, 1, above_low=True), help="Learn-then-Test: the target holds with probability >= 1 - delta")
    g.add_argument("--price", action="append", default=[], metavar="MODEL=USD",
                   help="USD per 1M tokens of a model (repeat); unpriced models cost 0")
    g.add_argument("--shots", type=integer(0), default=3, help="few-shot exemplars from the train split")
    g.add_argument("--balanced-shots", action="store_true",
                   help="exemplars cover every label before any repeats (classification tasks)")
    g.add_argument("--variants", type=integer(1), default=1,
                   help="prompt variants the student answers (3 or more for the agreement signal)")
    g.add_argument("--self-verify", action="store_true",
                   help="the student also judges its own answer (feature of --signal learned; implied by verifier)")
    g.add_argument("--committee", action="store_true",
                   help="add the teachers' averaged option distribution as one more teacher (2+ teachers)")
    g.add_argument("--no-kd-baseline", action="store_true", help="skip the MiniLM Hinton-KD baseline")
    g.add_argument("--kd-train", type=integer(10), default=200, help="train items the teacher labels for the KD baseline")
    g.add_argument("--prompt-style", default="mc", choices=PROMPT_STYLES,
                   help="mc: list the options before 'Answer:'; cloze: the option continues the input "
                        "(the BIG-bench / lm-eval-harness protocol, often better for small base models)")
    g.add_argument("--debias", default="none", choices=DEBIAS,
                   help="divide out each model's label prior, measured on content-free inputs (Zhao et al. 2021) "
                        "or on the calibration split's inputs (batch calibration, Zhou et al. 2023); for "
                        "classification tasks with one label set")
    g.add_argument("--rationales", type=integer(0), default=32,
                   help="test items both models explain, for rationale similarity (fidelity); 0 = skip")
    g.add_argument("--resplits", type=integer(0), default=20, help="random re-splits checking the accuracy target")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help=f"where local student and teachers score: {DEVICE_HELP}; "
                   f"default auto (${DEVICE_ENV} overrides auto; bf16 on a GPU with native bf16, fp32 on the CPU)")


def parse_prices(items: list[str]) -> dict[str, float]:
    prices = {}
    for item in items:
        model, sep, value = item.rpartition("=")
        try:
            prices[model] = float(value)
        except ValueError:
            model = ""
        if not sep or not model or not 0 <= prices.get(model, -1) < float("inf"):
            raise DistillError(f"--price {item!r}: write MODEL=USD_PER_1M_TOKENS, e.g. --price gemma-3-270m=0.5")
    return prices


def cascade_settings(args: argparse.Namespace) -> CascadeSettings:
    """The typed settings behind `distill eval cascade`'s flags."""
    return CascadeSettings(signal=args.signal, calibration=args.calibration, target_accuracy=args.target_accuracy,
                           max_teacher_share=args.max_teacher_share, max_cost_per_1k=args.max_cost_per_1k,
                           delta=args.delta, prices=parse_prices(args.price), shots=args.shots,
                           balanced_shots=args.balanced_shots, variants=args.variants, self_verify=args.self_verify,
                           limit=args.limit, kd_baseline=not args.no_kd_baseline, kd_train=args.kd_train,
                           resplits=args.resplits, rationales=args.rationales, debias=args.debias,
                           prompt_style=args.prompt_style, committee=args.committee, seed=args.seed)


def run_cascade_eval(args: argparse.Namespace) -> None:
    if not args.task:
        raise DistillError("distill eval cascade needs --task (a task from `distill data list`, e.g. --task arc_easy, "
                           "or a labelled file)")
    settings = cascade_settings(args)
    settings.check()  # before the models load: a bad flag or task costs nothing
    from clients.device import pick_device
    from store.runs import recorded_run
    from store.store import Store
    from clients.teachers import get_teacher
    from evals.task_eval import check_task, evaluate_task

    device = pick_device(args.device)  # a bad --device, or cuda without a GPU, fails before the store opens
    with Store(args.store) as store:
        check_task(store, args.task)
        student = get_teacher(args.student, device=device)
        teachers = [get_teacher(t, device=device) for t in args.teacher]
        config = {k: v for k, v in vars(args).items() if k not in ("func", "rest")} | {"device": device}
        with recorded_run(store, "eval-cascade", config) as run:
            out = evaluate_task(store, args.task, student, teachers, args.out, run.run_id, settings)
            store.check_requests_done(run.run_id)  # failed teacher requests: the run fails, exit 3
    print_summary(out.result)
    print(f"report: {out.report}\ncascade spec (for distill serve --cascade): {out.cascade_spec}")


def _ci(d: Interval) -> str:
    if d.value is None:
        return "n/a"
    low, high = d.ci_low, d.ci_high
    return f"{d.value:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else "")


def print_summary(result: CascadeResult) -> None:
    """The headline numbers on stdout: rows, cascade vs random, APGR/CPT, ECE, re-split hold rate."""
    for row in result.rows:
        print(f"{row.model[:40]:<40} {row.role:<12} acc {row.accuracy or 0:.3f} "
              f"[{row.ci_low or 0:.3f}, {row.ci_high or 0:.3f}]  teacher calls {row.teacher_share or 0:.0%}")
    cvr = result.cascade_vs_random
    print(f"cascade - random routing at {cvr.teacher_share or 0:.0%} teacher calls: {cvr.difference or 0:+.3f} "
          f"[{cvr.ci_low or 0:+.3f}, {cvr.ci_high or 0:+.3f}]")
    cis = result.metric_cis
    print(f"APGR {_ci(cis['apgr'])}  CPT(50%) {_ci(cis['cpt_50'])}  CPT(80%) {_ci(cis['cpt_80'])}")
    if result.signal_selection:
        print(f"signal auto -> {result.signal} (calibration AUROC "
              + ", ".join(f"{k} {v:.3f}" for k, v in result.signal_selection["calibration_auroc"].items()) + ")")
    print(f"gain over random routing, whole curve: {_ci(result.curve_vs_random)}")
    q = result.confidence_quality
    print(f"ECE before {_ci(q['before'].ece)} after {_ci(q['after'].ece)} ({result.calibrator['method']}); "
          f"AUROC {_ci(q['after'].auroc)}")
    if result.resplits:
        r = result.resplits
        print(f"accuracy target {r.target_accuracy:.3f} held on the test half in {r.hits}/{r.n} "
              f"random re-splits ({r.rate:.0%}; delta {r.delta}; certified on the calibration half in "
              f"{sum(bool(x.reached_on_calibration) for x in r.runs)}/{r.n})")
