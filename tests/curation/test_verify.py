"""Verifier registry: code in the sandbox (HumanEval), tool calls (schema, BFCL), format; caching."""
import dataclasses
import json

import pytest

from curation import verify as verify_module
from curation.verify import verify
from core.errors import DistillError
from prompts.bfcl import load_bfcl
from prompts.humaneval import load_humaneval


def _add(store, rows, teacher, answers, kind="cot", finish_reason="stop", reasoning=""):
    reqs, samples = [], []
    for row, answer in zip(rows, answers):
        key = f"k-{teacher}-{row.id}"
        reqs.append(dict(key=key, model=teacher, prompt_id=row.id, status="done", finish_reason=finish_reason))
        samples.append(dict(id=f"s-{teacher}-{row.id}", prompt_id=row.id, request_key=key, teacher=teacher, kind=kind,
                            reasoning=reasoning, answer=answer, parse_error=None))
    store.add_requests_and_samples(reqs, samples)


def _passed(store, verifier):
    return {r["sample_id"]: r["passed"] for r in store.query(
        "SELECT sample_id, passed FROM verdicts WHERE verifier = ?", [verifier])}


def test_code_runs_against_humaneval_unit_tests(store):
    rows = load_humaneval()[:6]
    store.add_prompts(rows, "he")
    _add(store, rows, "canon", [r.gold for r in rows])
    _add(store, rows, "lazy", ["    return None\n" for _ in rows])
    out = verify(store, "he", "rv", ["code"])
    assert out["code"]["new_verdicts"] == 12
    passed = _passed(store, "code")
    assert all(passed[f"s-canon-{r.id}"] for r in rows)
    assert not any(passed[f"s-lazy-{r.id}"] for r in rows)


def test_code_verifier_needs_unit_tests(store, pool):
    rows = store.prompts(pool)[:1]
    _add(store, rows, "t", ["print(1)"])
    with pytest.raises(DistillError, match="no unit tests"):
        verify(store, pool, "rv", ["code"])
    assert store.count("verdicts") == 0


def _gold_call(gold_json: str) -> dict:
    (name, spec), = json.loads(gold_json)[0].items()
    return {"name": name, "arguments": {k: v[0] for k, v in spec.items() if v and v[0] != ""}}


def test_tool_calls_against_schema_and_bfcl_ground_truth(store):
    rows = load_bfcl("simple")[:8]
    store.add_prompts(rows, "bfcl")
    good = [_gold_call(r.gold) for r in rows]
    _add(store, rows, "good", [json.dumps(c) for c in good], kind="tool_call")
    bad = [dict(c, arguments={**c["arguments"], "no_such_arg": 1}) for c in good]
    _add(store, rows, "bad", [json.dumps(c) for c in bad], kind="tool_call")
    verify(store, "bfcl", "rv", ["tool_schema", "bfcl"])
    schema, ast_match = _passed(store, "tool_schema"), _passed(store, "bfcl")
    assert all(schema[f"s-good-{r.id}"] and ast_match[f"s-good-{r.id}"] for r in rows)
    assert not any(schema[f"s-bad-{r.id}"] or ast_match[f"s-bad-{r.id}"] for r in rows)


def test_format_checks_refusal_truncation_and_script(store, pool):
    rows = store.prompts(pool)[:3]
    _add(store, rows[:1], "ok", ["No"], reasoning="Pears float because they are less dense than water.")
    _add(store, rows[1:2], "refuser", ["No"], reasoning="I'm sorry, but I cannot help with that.")
    _add(store, rows[2:3], "cut", ["No"], reasoning="Pears float because", finish_reason="length")
    _add(store, rows[:1], "cyrillic", ["Нет"], reasoning="Груши не тонут, потому что они легче воды.")
    verify(store, pool, "rv", ["format"])
    details = {r["sample_id"].split("-")[1]: (r["passed"], r["detail"]) for r in store.query(
        "SELECT sample_id, passed, detail FROM verdicts WHERE verifier = 'format'")}
    assert details["ok"] == (True, "ok")
    assert details["refuser"][0] is False and "refusal" in details["refuser"][1]
    assert details["cut"][0] is False and "truncated" in details["cut"][1]
    assert details["cyrillic"][0] is False and "non-Latin" in details["cyrillic"][1]


def test_verdicts_are_cached_per_verifier_version(store, pool, monkeypatch):
    rows = store.prompts(pool)[:4]
    _add(store, rows, "t", ["No"] * 4, reasoning="Because.")
    assert verify(store, pool, "r1")["answer_match"]["new_verdicts"] == 4
    assert verify(store, pool, "r2")["answer_match"]["new_verdicts"] == 0
    bumped = dataclasses.replace(verify_module.VERIFIERS["answer_match"], version="999")
    monkeypatch.setitem(verify_module.VERIFIERS, "answer_match", bumped)
    assert verify(store, pool, "r3")["answer_match"]["new_verdicts"] == 4
    with pytest.raises(DistillError, match="unknown verifier"):
        verify(store, pool, "r4", ["vibes"])
