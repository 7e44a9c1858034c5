"""`distill serve --cascade SPEC`: the calibrated cascade behind an OpenAI-compatible endpoint.

The spec is the cascade.json that `distill eval cascade` writes (or one written by hand):

  {"version": 1, "models": ["smollm2-135m-instruct", "gemma-3-270m"], "signal": "seq_prob",
   "calibrators": [{"method": "platt", "params": {"a": 1.3, "b": -0.2}}], "thresholds": [0.62],
   "task": "arc_easy"}

`models` runs cheapest first; every model but the last has a calibrator and a threshold. A request
goes to model 0; its answer's signal (one of evals/signals.GENERATION_SIGNALS, computed from the
generation's own token log-probs) is calibrated, and model i answers when that confidence is
>= thresholds[i], else the request moves on to model i+1. The last model always answers.

The reply is a normal chat.completion whose `model` is the model that answered, whose usage sums
every model consulted, plus a top-level `cascade` object: answered_by, confidence, threshold,
calibrated, escalated, signal and the path [{model, raw, confidence, threshold}, ...]. The last
model has no calibrator, so when it answers `confidence` is its raw signal and `calibrated` false.
Clients address the server as model "cascade" (e.g. litellm "openai/cascade").

HTTP, faults, latency and lifecycle are serve/server.py's. Each model gets its own batching
backend (a queue, a collector and one worker thread), so concurrent requests share generate()
calls on the student, and requests the same student batch escalates reach the next model
together and share a batch there too.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import DistillError
from evals.calibrate import METHODS, Calibrator
from evals.signals import GENERATION_SIGNALS, SIGNALS, token_features
from serve import faults as fault_kinds
from serve import openai_api
from serve.faults import FaultPlan, parse_faults
from serve.openai_api import Reply, bad
from serve.server import ServeGuard, ServerHandle, Server, check_options, launch
from serve.backends import ModelBackend, Stats

SERVED_NAME = "cascade"
SPEC_VERSION = 1
SPEC_KEYS = ("version", "models", "signal", "calibrators", "thresholds", "task")
REFIT = "refit the cascade with --signal seq_prob, token_q10 or token_margin (`distill eval cascade`)"


# ---- the spec ------------------------------------------------------------------------------------


@dataclass
class CascadeSpec:
    models: list[str]
    signal: str
    calibrators: list[Calibrator]
    thresholds: list[float]
    task: str | None = None


def _calibrator(d: Any, i: int, where: str) -> Calibrator:
    if not isinstance(d, dict) or d.get("method") not in METHODS or not isinstance(d.get("params", {}), dict):
        raise DistillError(f"{where}: calibrators[{i}] must be {{\"method\": one of {', '.join(METHODS)}, "
                           "\"params\": {...}}")
    cal = Calibrator.from_dict(d)
    try:  # a calibrator with missing or broken params fails here, at startup, not on a request
        out = cal.apply([0.05, 0.5, 0.95])
        ok = all(0.0 <= float(v) <= 1.0 for v in out)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise DistillError(f"{where}: calibrators[{i}] ({cal.method}) has bad params: {exc!r}") from None
    if not ok:
        raise DistillError(f"{where}: calibrators[{i}] ({cal.method}) maps confidences outside [0, 1]")
    return cal


def check_spec(d: Any, where: str = "cascade spec") -> CascadeSpec:
    """The spec as a CascadeSpec, or a one-line DistillError naming what to fix."""
    if not isinstance(d, dict):
        raise DistillError(f"{where}: expected a JSON object with keys {', '.join(SPEC_KEYS)}")
    unknown = sorted(set(d) - set(SPEC_KEYS))
    if unknown:
        raise DistillError(f"{where}: unknown key(s) {', '.join(unknown)}; a spec has {', '.join(SPEC_KEYS)}")
    if d.get("version") != SPEC_VERSION:
        raise DistillError(f"{where}: version {d.get('version')!r} is not supported; this distill reads version "
                           f"{SPEC_VERSION} (rewrite it with `distill eval cascade`)")
    models = d.get("models")
    if (not isinstance(models, list) or len(models) < 2
            or not all(isinstance(m, str) and m for m in models)):
        raise DistillError(f"{where}: 'models' must list at least two model names, cheapest first")
    if len(set(models)) != len(models):
        raise DistillError(f"{where}: 'models' names a model twice: {models}")
    api = [m for m in models if m.startswith("api:")]
    if api:
        raise DistillError(f"{where}: {api[0]} is an API model; a served cascade runs local models only")
    signal = d.get("signal")
    if signal not in SIGNALS:
        raise DistillError(f"{where}: unknown signal {signal!r}; {REFIT}")
    if signal not in GENERATION_SIGNALS:
        raise DistillError(f"{where}: signal {signal!r} cannot be computed from one generation at serve time; {REFIT}")
    n = len(models) - 1
    calibrators, thresholds = d.get("calibrators"), d.get("thresholds")
    if not isinstance(calibrators, list) or len(calibrators) != n:
        raise DistillError(f"{where}: 'calibrators' needs {n} entr{'y' if n == 1 else 'ies'} "
                           "(one per model but the last)")
    if not isinstance(thresholds, list) or len(thresholds) != n:
        raise DistillError(f"{where}: 'thresholds' needs {n} number(s) (one per model but the last)")
    for i, t in enumerate(thresholds):
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
            raise DistillError(f"{where}: thresholds[{i}] must be a number in [0, 1], got {t!r}")
    task = d.get("task")
    if task is not None and not isinstance(task, str):
        raise DistillError(f"{where}: 'task' must be a string")
    cals = [_calibrator(c, i, where) for i, c in enumerate(calibrators)]
    return CascadeSpec(list(models), signal, cals, [float(t) for t in thresholds], task)


def load_spec(path: str | Path) -> CascadeSpec:
    where = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise DistillError(f"cannot read cascade spec {where}: {exc.strerror or exc} "
                           "(`distill eval cascade` writes cascade.json into its --out dir)") from None
    try:
        d = json.loads(text)
    except ValueError as exc:
        raise DistillError(f"{where} is not valid JSON: {exc}") from None
    return check_spec(d, where)


# ---- confidence ----------------------------------------------------------------------------------


def raw_signal(reply: Reply, signal: str) -> float:
    """The spec's signal for one answer, from the tokens the model generated."""
    # reply.top holds each token's best alternatives, best first, from the raw distribution:
    # top-1 minus top-2 is the same margin LocalGenerator records as top2_margins at eval time.
    margins = [step[0][1] - step[1][1] for step in reply.top if len(step) >= 2]
    value = float(token_features(reply.logprobs, margins)[signal])
    return value if math.isfinite(value) else 0.0


# ---- the server ----------------------------------------------------------------------------------


class _CascadeStats(Stats):
    """Server counters plus, per model, its batches and how many requests it answered."""

    def __init__(self, models: list[str]) -> None:
        super().__init__()
        self.per_model = {m: Stats() for m in models}  # each model backend counts its own batches
        self.answered = dict.fromkeys(models, 0)

    def add_answer(self, model: str) -> None:
        with self.lock:
            self.answered[model] += 1

    def snapshot(self) -> dict[str, Any]:
        out = super().snapshot()
        with self.lock:
            answered = dict(self.answered)
        models = {}
        for m, s in self.per_model.items():
            snap = s.snapshot()
            models[m] = {"batches": snap["batches"], "batched_rows": snap["batched_rows"], "answered": answered[m]}
        out["batches"] = sum(v["batches"] for v in models.values())
        out["batched_rows"] = sum(v["batched_rows"] for v in models.values())
        out["models"] = models
        return out


class _Chain:
    """The models' backends as one: Server closes its backend on shutdown."""

    def __init__(self, backends: list[ModelBackend]) -> None:
        self.backends = backends

    def close(self) -> None:
        for b in self.backends:
            b.close()


class _CascadeServer(Server):
    """serve/server.py's server with the chat answer routed through the cascade.

    The batch API (/v1/batches) answers its lines through chat_body too, so batches cascade as well.
    """

    def __init__(self, spec: CascadeSpec, backends: list[ModelBackend], plan: FaultPlan, latency_s: float,
                 seed: int, stats: _CascadeStats) -> None:
        super().__init__(SERVED_NAME, _Chain(backends), plan, latency_s, seed, stats)
        self.spec, self.backends, self.cascade_stats = spec, backends, stats

    async def chat_body(self, body: dict[str, Any], truncate: bool) -> dict[str, Any]:
        messages, params, top_n = openai_api.chat_request(body, self.seed)
        if params.n != 1:  # one confidence decides one route: several choices could disagree
            raise bad("a cascade gives one answer per request: leave 'n' out or set it to 1", "n")
        spec, path, replies = self.spec, [], []
        last = len(self.backends) - 1
        for i, (name, backend) in enumerate(zip(spec.models, self.backends)):
            reply = (await backend.generate(backend.render(messages), params))[0]
            replies.append(reply)
            raw = raw_signal(reply, spec.signal)
            if i == last:  # always answers; no calibrator, so its confidence is the raw signal
                path.append({"model": name, "raw": raw, "confidence": raw, "threshold": None})
                break
            confidence = float(spec.calibrators[i].apply([raw])[0])
            path.append({"model": name, "raw": raw, "confidence": confidence, "threshold": spec.thresholds[i]})
            if confidence >= spec.thresholds[i]:
                break
        answer = fault_kinds.truncate(replies[-1]) if truncate else replies[-1]
        answered_by = path[-1]["model"]
        out = openai_api.chat_response(answered_by, [answer], top_n, bool(body.get("logprobs")))
        # Usage covers every model consulted: escalated requests pay for the student's tokens too.
        prompt = sum(r.prompt_tokens for r in replies)
        completion = sum(r.completion_tokens for r in replies[:-1]) + answer.completion_tokens
        out["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        out["cascade"] = {"answered_by": answered_by, "confidence": path[-1]["confidence"],
                          "threshold": path[-1]["threshold"], "calibrated": path[-1]["threshold"] is not None,
                          "escalated": len(path) > 1, "signal": spec.signal, "path": path}
        self.cascade_stats.add_answer(answered_by)
        return out

    async def _completion_body(self, body: dict[str, Any], truncate: bool) -> dict[str, Any]:
        raise bad("a cascade serves /v1/chat/completions only; serve one model with --model for /v1/completions")


def start_cascade_server(spec_path: str | Path, *, host: str = "127.0.0.1", port: int = 0, latency_s: float = 0.0,
                         faults: str | None = None, seed: int = 0, max_batch: int = 16,
                         batch_wait_ms: float = 5.0, guard: ServeGuard | None = None,
                         device: str | None = None) -> ServerHandle:
    """Load every model of the spec on `device` (None: the GPU when there is one), listen on
    host:port (0 picks a free port) and return.

    `.stats["models"][name]` counts each model's batches, batched rows and answers.
    """
    check_options(latency_s, max_batch, batch_wait_ms, port)
    (guard := guard or ServeGuard()).check(host)
    plan = parse_faults(faults, seed)
    spec = load_spec(spec_path)
    from clients.models import model_path

    for name in spec.models:  # an unknown last model fails before the first one loads
        model_path(name)
    stats = _CascadeStats(spec.models)
    backends: list[ModelBackend] = []
    try:
        for name in spec.models:
            backends.append(ModelBackend(name, max_batch, batch_wait_ms / 1000, stats.per_model[name], device))
    except BaseException:
        _Chain(backends).close()
        raise
    return launch(_CascadeServer(spec, backends, plan, latency_s, seed, stats), host, port, guard)

