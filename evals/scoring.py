"""Answer labelled multiple-choice items with every model, through the store's request cache.

Each model sees the same few-shot text prompt (exemplars with their gold answers from the
TRAIN split) and each option is scored as the continuation of "Answer:" (style "mc") or of
the input itself (style "cloze", BIG-bench's protocol) in one batched forward pass, as
lm-eval-harness does; `debias` optionally divides out the model's label prior. A scoring
pass is stored as a request (params with max_new_tokens=0, so its key never collides with a
generation) whose `extra` keeps the per-token log-probs of every option, so every confidence
signal can be recomputed later without running a model again; kill -9 loses at most the chunk
in flight.

The student also answers k-1 prompt variants (other exemplar sets) for the agreement signal,
and, for the verifier signal, judges its own answer (AutoMix-style self-verification: the
probability it puts on "Yes" when asked whether its answer is correct).
API teachers cannot score continuations: they generate a short answer that is matched to an
option (`answers_match`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import sys
import time

from tqdm.auto import tqdm

from store.store import Store
from curation.verify import answers_match
from core.errors import DistillError
from evals.signals import (
    PROMPT_STYLES,
    check_scoring_options,
    agreement,
    choice_features,
    label_prior,
    token_features,
)
from prompts.rows import PromptRow
from prompts.templates import render_exact
from engine.jobs import GenParams, Job, model_key, request_key
from engine.engine import run_requests
from clients.local_scoring import scoring_order
from clients.teachers import Teacher

SCORE_PARAMS = GenParams(max_new_tokens=0)
CONTENT_FREE = ("N/A", "", "[MASK]")  # the content-free inputs of Zhao et al. 2021
MAX_OPTION_SETS = 20  # contextual calibration is for label sets shared by many rows
API_PARAMS = GenParams(max_new_tokens=16, stop=("\n",))
MAX_CHUNK_ITEMS = 64  # items per stored scoring chunk (batched models)
# Open-answer tasks (no options: gsm8k, asdiv): every model generates a short greedy answer.
OPEN_PARAMS = GenParams(max_new_tokens=20, stop=("\n",))


def exemplar_sets(train_rows: list[PromptRow], shots: int, variants: int, seed: int = 0,
                  balanced: bool = False) -> list[list[PromptRow]]:
    """`variants` disjoint-as-possible few-shot sets from the train split (variant 0 is the main one).

    `balanced` deals exemplars round-robin over gold labels, so a classification prompt shows
    every label before any repeats: small models copy the labels they saw most or last
    (majority-label and recency bias, Zhao et al. 2021).
    """
    train = [r for r in train_rows if r.split == "train"]
    # Option tasks take rows with options; an open-answer task (no row has options) its answered rows.
    pool = [r for r in train if r.choices] or [r for r in train if r.gold and not r.choices]
    if shots and not pool:
        raise DistillError("few-shot exemplars need labelled train rows: load the whole task, not only test rows")
    random.Random(seed).shuffle(pool)
    if balanced:
        by_label: dict[str, list[PromptRow]] = {}
        for r in pool:
            by_label.setdefault(r.gold, []).append(r)
        queues = list(by_label.values())
        pool = [q[i] for i in range(max(map(len, queues))) for q in queues if i < len(q)]
    return [[pool[(v * shots + i) % len(pool)] for i in range(shots)] if shots else [] for v in range(variants)]


def mc_prompt(row: PromptRow, shots: list[PromptRow], style: str = "mc") -> str:
    """The few-shot text every model continues; exemplars show their human (gold) answers.

    "mc" lists the options before "Answer:"; "cloze" is BIG-bench's own protocol (the option
    simply continues the input, options unseen), which suits small base models and inputs
    written as a sentence to complete. Open-answer rows (choices None) have no options line:
    the model generates what follows "Answer:" (or the input, for cloze).
    """
    if style not in PROMPT_STYLES:
        raise DistillError(f"unknown prompt style '{style}': use one of {', '.join(PROMPT_STYLES)}")
    return render_exact(f"eval_{style}.j2", row=row, shots=shots)


def _count_tokens(model: Teacher, text: str) -> int:
    tokenizer = getattr(model, "tokenizer", None)
    return len(tokenizer(text)["input_ids"]) if tokenizer is not None else len(text.split())


def _option_details(model: Teacher, rendered: str, choices: list[str]) -> list[dict]:
    conts = [" " + c for c in choices]
    if hasattr(model, "continuation_details"):
        return model.continuation_details(rendered, conts)
    # Scripted/test teachers only give summed scores: one pseudo-token per option.
    return [{"token_logprobs": [lp], "top2_margins": []} for lp in model.score_continuations(rendered, conts)]


def _score_chunks(model: Teacher, todo: list, lengths: list[int]) -> list[list]:
    """Chunks of `todo` that are stored one at a time (kill -9 loses at most the chunk in flight).

    A model with `continuation_details_batch` gets `todo` in `scoring_order` (prompts sharing a
    few-shot block together, longest first: little padding, the shared block run once per chunk)
    cut where (longest prompt x option rows) reaches its token budget; others get 16 items."""
    if not hasattr(model, "continuation_details_batch"):
        return [todo[i:i + 16] for i in range(0, len(todo), 16)]
    budget = getattr(model, "score_token_budget", 8192)
    chunks, chunk, rows, longest = [], [], 0, 0
    for i in scoring_order([rendered for (_, rendered), _ in todo], lengths):
        options = len(todo[i][0][0].choices)
        if chunk and (max(longest, lengths[i]) * (rows + options) > budget or len(chunk) >= MAX_CHUNK_ITEMS):
            chunks.append([todo[j] for j in chunk])
            chunk, rows, longest = [], 0, 0
        chunk.append(i)
        rows += options
        longest = max(longest, lengths[i])
    return chunks + ([[todo[j] for j in chunk]] if chunk else [])


def _score_local(store: Store, model: Teacher, jobs: list[tuple[PromptRow, str]], run_id: str,
                 purpose: str, label: str) -> dict[str, dict]:
    keys = [request_key(model_key(model), rendered, SCORE_PARAMS, 0) for _, rendered in jobs]
    cached = store.finished_requests(keys)
    store.add_cache_hits(run_id, model.name, len(cached))
    # Jobs sharing a prompt share a request key: score each key once.
    todo = list({key: (job, key) for job, key in zip(jobs, keys) if key not in cached}.values())
    print(f"[{label}] {len(jobs) - len(todo)} scored before, {len(todo)} to go", file=sys.stderr, flush=True)
    bar = tqdm(total=len(todo), desc=label, unit="item", file=sys.stderr, disable=not todo)
    lengths = [_count_tokens(model, rendered) for (_, rendered), _ in todo]
    n_tokens = dict(zip((key for _, key in todo), lengths))
    for chunk in _score_chunks(model, todo, lengths):
        if hasattr(model, "continuation_details_batch"):
            began = time.perf_counter()
            details = model.continuation_details_batch([(rendered, [" " + c for c in row.choices])
                                                        for (row, rendered), _ in chunk])
            latencies = [(time.perf_counter() - began) / len(chunk)] * len(chunk)
            bar.update(len(chunk))
        else:  # per item (scripted models, teachers without batch support)
            details, latencies = [], []
            for (row, rendered), _ in chunk:
                began = time.perf_counter()
                details.append(_option_details(model, rendered, row.choices))
                latencies.append(time.perf_counter() - began)
                bar.update(1)
        requests = []
        for ((row, rendered), key), opts, latency in zip(chunk, details, latencies):
            best = choice_features(opts)["answer_index"]
            requests.append({
                "key": key, "model": model.name, "prompt_id": row.id, "template_hash": None,
                "params": SCORE_PARAMS.as_dict(), "params_hash": SCORE_PARAMS.hash(), "sample_index": 0,
                "purpose": purpose, "rendered": rendered, "status": "done", "response": row.choices[best],
                "prompt_tokens": n_tokens[key], "completion_tokens": len(opts[best]["token_logprobs"]),
                "cost_usd": 0.0, "latency_s": latency, "finish_reason": "stop", "error": None,
                "extra": {"options": opts}, "run_id": run_id})
        store.add_requests_and_samples(requests, [])
    bar.close()
    return store.finished_requests(keys)


def _option_sets(rows: list[PromptRow]) -> list[tuple]:
    option_sets = sorted({tuple(r.choices or []) for r in rows})
    if len(option_sets) > MAX_OPTION_SETS:
        raise DistillError(f"--debias needs a classification task with a shared label set, but these rows have "
                           f"{len(option_sets)} different option lists: drop --debias for this task")
    return option_sets


def batch_priors(requests: list[dict], rows: list[PromptRow]) -> dict[tuple, list[float]]:
    """Per distinct option list: the label prior over the CALIBRATION rows' own scoring passes
    (batch calibration; no extra model call, no labels, no test rows)."""
    passes: dict[tuple, list] = {opts: [] for opts in _option_sets(rows)}
    for req, row in zip(requests, rows):
        if row.split == "calibration" and "options" in _extra(req):
            passes[tuple(row.choices)].append(_extra(req)["options"])
    return {opts: label_prior(p).tolist() for opts, p in passes.items() if p}


def content_free_priors(store: Store, model: Teacher, rows: list[PromptRow], shots: list[PromptRow],
                        run_id: str, label: str, style: str = "mc") -> dict[tuple, list[float]]:
    """Per distinct option list: the model's label prior under this few-shot prompt, measured on
    content-free inputs (3 cached scoring passes per option list)."""
    free = {}
    for opts in _option_sets(rows):
        tag = hashlib.sha256(json.dumps(opts).encode()).hexdigest()[:12]
        free[opts] = [PromptRow(id=f"content-free:{tag}:{i}", source="content-free", task="content-free",
                                input=text, gold=opts[0], split="content-free", choices=list(opts))
                      for i, text in enumerate(CONTENT_FREE)]
    jobs = [(r, mc_prompt(r, shots, style)) for rs in free.values() for r in rs]
    done = _score_local(store, model, jobs, run_id, "eval-content-free", label + " content-free")
    return {opts: label_prior([_extra(done[request_key(model_key(model), mc_prompt(r, shots, style), SCORE_PARAMS, 0)])
                               ["options"] for r in rs]).tolist()
            for opts, rs in free.items()}


def _features_of(request: dict, row: PromptRow, prior: list[float] | None = None) -> dict:
    extra = _extra(request)
    if "options" in extra:
        return choice_features(extra["options"], prior)
    # A generated answer (API teacher): matched to an option, token signals from its log-probs.
    text = (request["response"] or "").strip()
    exact = [i for i, c in enumerate(row.choices) if text.casefold() == c.strip().casefold()]
    index = exact[0] if exact else next((i for i, c in enumerate(row.choices) if answers_match(text, c)), -1)
    return {"answer_index": index, **token_features(extra.get("token_logprobs", []), [])}


def _is_gold(answer: str, row: PromptRow, index: int) -> bool:
    """An option chosen by index must BE the gold option: answers_match's looser matching would
    count "incorrect" as matching "correct" (winowhy) or "implausible" as "plausible"."""
    if index >= 0:
        return answer.strip().casefold() == row.gold.strip().casefold()
    return answers_match(answer, row.gold)


def self_verify_prompt(row: PromptRow, shots: list[PromptRow], answer: str, style: str = "mc") -> str:
    return render_exact("eval_self_verify.j2", prompt=mc_prompt(row, shots, style), answer=answer)


def _self_verify(store: Store, model: Teacher, rows: list[PromptRow], shots: list[PromptRow], out: list[dict],
                 run_id: str, label: str, style: str = "mc") -> None:
    """Add the `verifier` feature (P("Yes") that its own answer is right) to each prediction."""
    yes_no = [dataclasses.replace(r, choices=["Yes", "No"]) for r in rows]
    # An open-answer row is shown as it was asked (no options line); option rows keep their
    # stored prompts (and cache keys).
    jobs = [(r, self_verify_prompt(r if row.choices else row, shots, p["answer"], style))
            for r, row, p in zip(yes_no, rows, out)]
    done = _score_local(store, model, jobs, run_id, "eval-student-verify", label + " self-verify")
    for (r, rendered), p in zip(jobs, out):
        req = done[request_key(model_key(model), rendered, SCORE_PARAMS, 0)]
        p["features"]["verifier"] = choice_features(_extra(req)["options"])["probs"][0]
        p["tokens_verify"] = int(req["prompt_tokens"] + req["completion_tokens"])


def _extra(request: dict) -> dict:
    extra = request["extra"]
    return json.loads(extra) if isinstance(extra, str) else (extra or {})


def answer_items(store: Store, model: Teacher, rows: list[PromptRow], exemplars: list[list[PromptRow]],
                 run_id: str, role: str, self_verify: bool = False, debias: str = "none",
                 style: str = "mc") -> list[dict]:
    """One prediction per row: answer, correct, tokens, latency and confidence features.

    `debias` ("content-free" or "batch", see `label_prior`) divides each option distribution
    by the model's label prior; API teachers, which generate rather than score, are unaffected.
    """
    check_scoring_options(debias, style)
    if rows and not any(r.choices for r in rows):
        return _answer_open(store, model, rows, exemplars, run_id, role, self_verify, debias, style)
    if any(not r.choices for r in rows):
        raise DistillError("cascade evaluation scores options: every row needs choices, or none for an "
                           "open-answer task (for free-text labels give the file a choices column)")
    variants = exemplars if role == "student" else exemplars[:1]
    jobs = [(row, mc_prompt(row, shots, style)) for shots in variants for row in rows]
    label = f"eval {role} {model.name.rsplit('/', 1)[-1]}"
    api = hasattr(model, "agenerate")  # API teachers generate an answer; local models score options
    if api:
        done = run_requests(store, model, [Job(prompt_id=r.id, rendered=t) for r, t in jobs], API_PARAMS,
                            purpose=f"eval-{role}", run_id=run_id, label=label)
        keys = [request_key(model_key(model), t, API_PARAMS, 0) for _, t in jobs]
    else:
        done = _score_local(store, model, jobs, run_id, f"eval-{role}", label)
        keys = [request_key(model_key(model), t, SCORE_PARAMS, 0) for _, t in jobs]
    if debias == "content-free" and not api:
        priors = [content_free_priors(store, model, rows, shots, run_id, label, style) for shots in variants]
    elif debias == "batch" and not api:
        priors = [batch_priors([done[k] for k in keys[v * len(rows):(v + 1) * len(rows)]], rows)
                  for v in range(len(variants))]
    else:
        priors = [{} for _ in variants]
    out = []
    for i, row in enumerate(rows):
        reqs = [done[keys[v * len(rows) + i]] for v in range(len(variants))]
        feats = [_features_of(r, row, priors[v].get(tuple(row.choices))) for v, r in enumerate(reqs)]
        main = feats[0]
        answer = row.choices[main["answer_index"]] if main["answer_index"] >= 0 else (reqs[0]["response"] or "")
        if role == "student":
            answers = [row.choices[f["answer_index"]] if f["answer_index"] >= 0 else "" for f in feats]
            main["agreement"] = agreement(answer, answers)
        out.append({"prompt_id": row.id, "split": row.split, "request_key": reqs[0]["key"], "answer": answer,
                    "correct": _is_gold(answer, row, main["answer_index"]), "features": main,
                    "tokens": int(sum(r["prompt_tokens"] + r["completion_tokens"] for r in reqs)),
                    "latency_s": float(sum(r["latency_s"] or 0.0 for r in reqs))})
    if self_verify and not api:
        _self_verify(store, model, rows, exemplars[0], out, run_id, label, style)
    return out


def _generation_extra(job: Job, index: int, gen, key: str) -> tuple[dict, list]:
    """Keep the generated tokens' log-probs and top-2 margins (token signals, recomputable later)."""
    return {"token_logprobs": list(gen.token_logprobs or []), "top2_margins": list(gen.top2_margins or [])}, []


def open_answer_text(response: str | None) -> str:
    """The answer a generation gives: its first line, stripped."""
    return (response or "").strip().split("\n", 1)[0].strip()


def _answer_open(store: Store, model: Teacher, rows: list[PromptRow], exemplars: list[list[PromptRow]],
                 run_id: str, role: str, self_verify: bool, debias: str, style: str) -> list[dict]:
    """Open-answer rows (no options, e.g. a number): every model, local or API, generates a short
    greedy answer to the same few-shot prompt through the request cache (resumable, a re-run is
    free); it is right when `answers_match` the gold answer. Confidence comes from the generated
    tokens (seq_prob, token_q10, token_margin), plus agreement across variants and self-verification."""
    if debias != "none":
        raise DistillError(f"--debias {debias} divides out a prior over options, and this task has none "
                           "(open answers): drop --debias")
    variants = exemplars if role == "student" else exemplars[:1]
    jobs = [Job(prompt_id=row.id, rendered=mc_prompt(row, shots, style)) for shots in variants for row in rows]
    label = f"eval {role} {model.name.rsplit('/', 1)[-1]}"
    done = run_requests(store, model, jobs, OPEN_PARAMS, purpose=f"eval-{role}", run_id=run_id,
                        postprocess=_generation_extra, label=label)
    keys = [request_key(model_key(model), j.rendered, OPEN_PARAMS, 0) for j in jobs]
    out = []
    for i, row in enumerate(rows):
        reqs = [done[keys[v * len(rows) + i]] for v in range(len(variants))]
        answers = [open_answer_text(r["response"]) for r in reqs]
        extra = _extra(reqs[0])
        features = token_features(extra.get("token_logprobs", []), extra.get("top2_margins", []))
        if role == "student":
            features["agreement"] = sum(a == answers[0] or answers_match(a, answers[0]) for a in answers) / len(answers)
        out.append({"prompt_id": row.id, "split": row.split, "request_key": reqs[0]["key"], "answer": answers[0],
                    "correct": answers_match(answers[0], row.gold), "features": features,
                    "tokens": int(sum(r["prompt_tokens"] + r["completion_tokens"] for r in reqs)),
                    "latency_s": float(sum(r["latency_s"] or 0.0 for r in reqs))})
    if self_verify and not hasattr(model, "agenerate"):
        _self_verify(store, model, rows, exemplars[0], out, run_id, label, style)
    return out
