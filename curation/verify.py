"""Verifiers: each writes verdict rows (passed, score, detail), cached per (sample, verifier version).

    answer_match  final answer vs the human gold: numbers, fractions, symbolic math (sympy /
                  math-verify via curation/math_answers.py), multiple-choice letters or texts, yes/no
    code          the sample's code run against the prompt's unit tests in a sandboxed subprocess
                  (synth/code_check.py, judged outside the sandboxed code; HumanEval-style meta: test, entry_point)
    tool_schema   tool calls valid against the prompt's JSON schemas
    bfcl          tool calls vs BFCL ground truth (AST match of function name and arguments)
    format        length, refusal, language (Latin script share) and truncated output

A verifier is a function over a list of samples (batched, so code can run in parallel) that
returns one (passed, score, detail) per sample. Bumping a verifier's version re-verifies.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Callable

from store.store import Store
from core.errors import DistillError

VERIFIER = "answer_match"
VERSION = "2"
Check = tuple[bool, float, str]


def answers_match(answer: str | None, gold: str, choices: list[str] | None = None) -> bool:
    """Equal after normalisation, or mathematically equivalent (curation.math_answers)."""
    from curation.math_answers import equivalent

    if answer is None:
        return False
    a, g = answer.strip().rstrip(".").lower(), gold.strip().rstrip(".").lower()
    return a == g or equivalent(answer, gold, choices)


def _choices(s: dict) -> list[str] | None:
    return json.loads(s["choices"]) if s.get("choices") else None


def _answer_match(samples: list[dict]) -> list[Check]:
    out = []
    for s in samples:
        ok = answers_match(s["answer"], s["gold"] or "", _choices(s))
        out.append((ok, float(ok), s["parse_error"] or f"answer {s['answer']!r} vs gold {s['gold']!r}"))
    return out


def _code(samples: list[dict]) -> list[Check]:
    from synth.code_check import check_many

    items = []
    for s in samples:
        meta = json.loads(s["meta"]) if s.get("meta") else {}
        if "test" not in meta or "entry_point" not in meta:
            raise DistillError(f"prompt {s['prompt_id']} has no unit tests (meta.test, meta.entry_point): "
                               "the code verifier needs a HumanEval-style pool")
        items.append(dict(completion=s["answer"] or s["reasoning"] or "", prompt=s["input"], test=meta["test"],
                          entry_point=meta["entry_point"]))
    return [(r.passed, float(r.passed), f"{r.status} in {r.duration_s:.2f}s: {r.stderr[-300:]}".strip())
            for r in check_many(items)]


def _calls(s: dict) -> list[dict] | None:
    try:
        calls = json.loads(s["answer"]) if s["answer"] else None
    except json.JSONDecodeError:
        return None
    return [calls] if isinstance(calls, dict) else calls


def _tool_schema(samples: list[dict]) -> list[Check]:
    from synth.tools import check_call_against_schema

    out = []
    for s in samples:
        calls, meta = _calls(s), json.loads(s["meta"]) if s.get("meta") else {}
        if not calls:
            out.append((False, 0.0, s["parse_error"] or "no tool call"))
            continue
        checks = [check_call_against_schema(c, meta.get("functions", [])) for c in calls]
        bad = [why for ok, why in checks if not ok]
        out.append((not bad, 1.0 - len(bad) / len(checks), "; ".join(bad) or "ok"))
    return out


def _bfcl(samples: list[dict]) -> list[Check]:
    from synth.tools import bfcl_match

    out = []
    for s in samples:
        ok = s["answer"] is not None and bfcl_match(_calls(s), s["gold"] or "")
        out.append((ok, float(ok), s["parse_error"] or f"calls {s['answer']!r}"))
    return out


_REFUSAL = re.compile(r"\b(I can(no|')t help|I'm sorry, but|as an AI (language )?model|I am unable to|"
                      r"I cannot (assist|provide|comply))", re.I)
MAX_CHARS = 20_000


def _format(samples: list[dict]) -> list[Check]:
    out = []
    for s in samples:
        text = f"{s['reasoning'] or ''} {s['answer'] or ''}".strip()
        letters = [c for c in text if c.isalpha()]
        latin = sum(c.isascii() or "\u00c0" <= c <= "\u024f" for c in letters) / max(1, len(letters))
        problems = [why for bad, why in [
            (not text, "empty"), (len(text) > MAX_CHARS, f"longer than {MAX_CHARS} chars"),
            (s.get("finish_reason") == "length", "truncated (hit max tokens)"),
            (bool(_REFUSAL.search(text)), "refusal"), (latin < 0.8, f"non-Latin script ({latin:.0%} Latin)")] if bad]
        out.append((not problems, 1.0 - len(problems) / 5, "; ".join(problems) or "ok"))
    return out


@dataclass(frozen=True)
class Verifier:
    name: str
    version: str
    kinds: tuple[str, ...]
    check: Callable[[list[dict]], list[Check]]


TEXT_KINDS = ("cot", "revision", "aggregate", "tool_trajectory")
VERIFIERS = {v.name: v for v in [
    Verifier(VERIFIER, VERSION, TEXT_KINDS, _answer_match),
    Verifier("code", "1", ("cot", "code", "aggregate"), _code),
    Verifier("tool_schema", "1", ("tool_call",), _tool_schema),
    Verifier("bfcl", "1", ("tool_call",), _bfcl),
    Verifier("format", "1", TEXT_KINDS + ("critique",), _format),
]}


def verify(store: Store, pool: str, run_id: str, verifiers: list[str] | tuple[str, ...] = (VERIFIER,),
           batch: int = 2000) -> dict:
    """Run verifiers on every sample of the pool not yet verified at their current version."""
    unknown = [v for v in verifiers if v not in VERIFIERS]
    if unknown:
        raise DistillError(f"unknown verifier(s) {unknown}: choose from {sorted(VERIFIERS)}")
    result = {}
    for name in verifiers:
        v = VERIFIERS[name]
        todo = store.samples_to_verify(pool, list(v.kinds), v.name, v.version)
        new = passed = 0
        for start in range(0, len(todo), batch):  # each batch is committed: a kill loses at most one
            chunk = todo[start:start + batch]
            rows = [dict(sample_id=s["id"], verifier=v.name, verifier_version=v.version, passed=bool(ok),
                         score=float(score), detail=detail[:2000], run_id=run_id)
                    for s, (ok, score, detail) in zip(chunk, v.check(chunk))]
            store.add_verdicts(rows)
            new, passed = new + len(rows), passed + sum(r["passed"] for r in rows)
        total = store.count("verdicts", "verifier = ? AND verifier_version = ? AND passed", [v.name, v.version])
        result[name] = {"new_verdicts": new, "passed_new": passed, "passed_total": total}
    return result


def verify_samples(store: Store, pool: str, run_id: str) -> dict:
    """Final answers of the pool's traces vs gold (the demo's verifier)."""
    return verify(store, pool, run_id, [VERIFIER])[VERIFIER]


def verify_tool_samples(store: Store, pool: str, run_id: str) -> dict:
    """Final answers of tool trajectories vs gold; BFCL calls vs ground truth (AST match)."""
    out = verify(store, pool, run_id, [VERIFIER, "bfcl"])
    return {"new_verdicts": sum(r["new_verdicts"] for r in out.values()),
            "passed": sum(r["passed_new"] for r in out.values())}
