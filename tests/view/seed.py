"""A small store with one of everything the viewer shows, built through the Store's own methods.

Teacher output carries script and attribute-breaking payloads, so every page that shows it is
also an escaping test; a running run, a failed run, a dedup cluster, a purified pick, a critique
and its revision, a ReAct rollout, a pair and an eval with its report folder are all there.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

from prompts.rows import PromptRow
from store.store import Store

SCRIPT = "<script>alert(1)</script>"
ATTR = '"><img src=x onerror=alert(1)>'
# A 1x1 PNG: what the eval's report folder holds in place of the real plots.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


@dataclass
class Seeded:
    path: Path
    pool: str = "yesno"
    prompt_id: str = "p-main"
    runs: dict = field(default_factory=dict)
    eval_id: str = "eval-test"
    report_dir: Path | None = None
    secret: Path | None = None


def _request(key: str, model: str, prompt_id: str, run_id: str, *, status: str = "done", cost: float = 0.001,
             error: str | None = None, extra: dict | None = None) -> dict:
    return dict(key=key, model=model, prompt_id=prompt_id, template_hash="t", params="{}", params_hash="h",
                sample_index=0, purpose="cot", rendered="prompt", status=status, response="r", prompt_tokens=30,
                completion_tokens=12, cost_usd=cost, latency_s=0.2, finish_reason="stop", error=error,
                extra=json.dumps(extra or {}), run_id=run_id)


def _sample(sid: str, prompt_id: str, teacher: str, kind: str, reasoning: str | None, answer: str | None,
            run_id: str, parent: str | None = None, parse_error: str | None = None) -> dict:
    return dict(id=sid, prompt_id=prompt_id, request_key="k-" + sid, teacher=teacher, kind=kind, reasoning=reasoning,
                answer=answer, parse_error=parse_error, parent_id=parent, run_id=run_id)


def _prompts() -> list[PromptRow]:
    rows = [PromptRow(id="p-main", source="test", task="yesno", input="Would a pear sink in water?", gold="No",
                      split="train", choices=["Yes", "No"], rationale="Pears are less dense than water.")]
    for i in range(60):  # enough for a second page of prompts
        rows.append(PromptRow(id=f"p-{i:03d}", source="test", task="yesno", input=f"Is {i} even? (question {i})",
                              gold="Yes" if i % 2 == 0 else "No", split=("train", "calibration", "test")[i % 3],
                              choices=["Yes", "No"], rationale=f"{i} mod 2 is {i % 2}."))
    return rows


def _samples(run: str) -> list[dict]:
    p = "p-main"
    steps = [_sample("s-step1", p, "teacher-a", "tool_step", "I should compute the density.", "calculator[0.6/1.0]",
                     run),
             _sample("s-step2", p, "teacher-a", "tool_step", "0.6 is below 1.", "No", run, parent="s-step1")]
    messages = [{"role": "user", "content": "Would a pear sink in water?"},
                {"role": "assistant", "content": "I should compute the density.",
                 "tool_calls": [{"type": "function", "function": {"name": "calculator", "arguments": {"x": "0.6/1.0"}}}]},
                {"role": "tool", "name": "calculator", "content": "0.6"},
                {"role": "assistant", "content": "0.6 is below 1.\nFinal Answer: No"}]
    return [
        _sample("s-a1", p, "teacher-a", "cot", "Pears float because they are less dense than water.", "No", run),
        _sample("s-a2", p, "teacher-a", "cot", "Pears float because they are much less dense than water.", "No", run),
        _sample("s-b1", p, "teacher-b", "cot", f"Pears are heavy {SCRIPT} so they sink.", ATTR, run),
        _sample("s-crit", p, "teacher-b", "critique", "The trace is right. Verdict: correct", "correct", run,
                parent="s-a1"),
        _sample("s-rev", p, "teacher-a", "revision", "Pears float: density below water.", "No", run, parent="s-crit"),
        *steps,
        _sample("j-traj", p, "teacher-a", "tool_trajectory", json.dumps(messages), "No", run, parent="s-step2"),
        *[_sample(f"s-x{i:03d}", f"p-{i:03d}", "teacher-a" if i % 2 else "teacher-b", "cot", f"Thinking about {i}.",
                  "Yes" if i % 2 == 0 else "No", run) for i in range(60)],
    ]


def _eval(store: Store, seeded: Seeded, run_id: str, tmp: Path) -> None:
    report = tmp / "eval-out"
    report.mkdir()
    for name in ("cascade.png", "reliability.png", "risk_coverage.png"):
        (report / name).write_bytes(PNG)
    seeded.secret = tmp / "secret.txt"
    seeded.secret.write_text("not for the browser")
    (report / "slices.png").symlink_to(seeded.secret)  # a plot name that leads outside the folder
    seeded.report_dir = report
    (report / "report.md").write_text("# report\n")
    metrics = {"student": "student-m", "cascade_teacher": "teacher-a", "threshold": 0.5, "threshold_text": "0.5",
               "calibrator": {"method": "none", "params": {}}, "signal": "seq_prob",
               "rows": [{"model": "student-m", "role": "student", "accuracy": 0.6, "ci_low": 0.5, "ci_high": 0.7,
                         "teacher_share": 0.0, "tokens_per_1k": 1000.0, "cost_per_1k_usd": 0.0},
                        {"model": "cascade", "role": "cascade", "accuracy": 0.8, "ci_low": 0.7, "ci_high": 0.9,
                         "teacher_share": 0.4, "tokens_per_1k": 1500.0, "cost_per_1k_usd": 0.01}]}
    preds = []
    test_ids = [f"p-{i:03d}" for i in range(60) if i % 3 == 2]  # 20 test prompts
    for j, pid in enumerate(test_ids):
        # Student: confident and right on even j, unsure (escalated) on j % 4 == 1, unsure but right on j % 4 == 3.
        conf = 0.9 if j % 2 == 0 else 0.3
        student_right = j % 2 == 0 or j % 4 == 3
        preds.append(dict(eval_id=seeded.eval_id, model="student-m", prompt_id=pid, split="test", request_key=f"e{j}",
                          answer=ATTR if j == 1 else f"student says {j}", correct=student_right, confidence=conf,
                          tokens=10))
        preds.append(dict(eval_id=seeded.eval_id, model="teacher-a", prompt_id=pid, split="test", request_key=f"t{j}",
                          answer=f"teacher says {j}", correct=j != 3, confidence=None, tokens=20))
    store.add_eval(seeded.eval_id, run_id, "yesno", "test", {"student": "student-m", "teachers": ["teacher-a"]},
                   metrics, str(report / "report.md"), preds)


def build_store(tmp: Path) -> Seeded:
    """The store every viewer test reads; returns where its parts are."""
    seeded = Seeded(tmp / "view.duckdb")
    with Store(seeded.path) as store:
        store.add_prompts(_prompts(), seeded.pool)
        done = store.start_run("synth", {"kind": "cot", "teacher": "teacher-a"})
        samples = _samples(done)
        extra = {"s-step1": {"react_step": {"observation": f"0.6 {SCRIPT}"}}}
        store.add_requests_and_samples([_request(s["request_key"], s["teacher"], s["prompt_id"], done,
                                                 extra=extra.get(s["id"])) for s in samples], samples)
        store.finish_run(done, timings={"wall_s": 12.5})
        failed = store.start_run("curate", {"pool": "yesno"})
        store.finish_run(failed, "failed", summary={"error": f"ValueError: bad {SCRIPT}"})
        running = store.start_run("synth", {"kind": "cot", "teacher": "api:teacher-c"})
        store.add_requests_and_samples(
            [_request(f"live-{i}", "api:teacher-c", f"p-{i:03d}", running, cost=0.01) for i in range(8)]
            + [_request("live-err", "api:teacher-c", "p-010", running, status="error", cost=0.0,
                        error="RateLimitError: 429 too many requests")], [])
        store.add_cache_hits(running, "api:teacher-c", 17)  # requests this run found finished
        seeded.runs = {"done": done, "failed": failed, "running": running}
        store.add_verdicts([
            dict(sample_id="s-a1", verifier="answer_match", verifier_version="2", passed=True, score=1.0,
                 detail="answer 'No' vs gold 'No'", run_id=done),
            dict(sample_id="s-a2", verifier="answer_match", verifier_version="2", passed=True, score=1.0,
                 detail="answer 'No' vs gold 'No'", run_id=done),
            dict(sample_id="s-b1", verifier="answer_match", verifier_version="2", passed=False, score=0.0,
                 detail=f"answer {ATTR!r} vs gold 'No'", run_id=done),
            dict(sample_id="s-b1", verifier="decontam", verifier_version="n13-x", passed=False, score=0.0,
                 detail="p-001: shares a 13-gram", run_id=done),
            dict(sample_id="s-a1", verifier="judge:judge-m", verifier_version="j1", passed=True, score=0.8,
                 detail=json.dumps({"helpfulness": 4, "honesty": 4}), run_id=done),
        ])
        params = json.dumps({"ngram": 3, "threshold": 0.8, "scope": "prompt"})
        store.upsert_dedup([dict(sample_id="s-a1", method="minhash", cluster_id="c-a1", keep=True, params=params,
                                 run_id=done),
                            dict(sample_id="s-a2", method="minhash", cluster_id="c-a1", keep=False, params=params,
                                 run_id=done)])
        store.replace_purified("verified_first", [dict(prompt_id="p-main", method="verified_first", sample_id="s-a1",
                                                       detail=json.dumps({"candidates": 3, "verified": True,
                                                                          "chosen_teacher": "teacher-a"}),
                                                       run_id=done)], ["p-main"])
        store.replace_pairs("verified", seeded.pool, [dict(id="x-1", prompt_id="p-main", chosen_sample_id="s-a1",
                                                           rejected_sample_id="s-b1", strategy="verified", margin=1.0,
                                                           run_id=done)])
        _eval(store, seeded, done, tmp)
    return seeded
