"""Open-answer (numeric) tasks in the cascade evaluator: rows without choices, every model generates
its answer (evals/scoring.py `_answer_open`, evals/task_eval.py `is_open_answer`)."""
from __future__ import annotations

import hashlib
import math
import json
from pathlib import Path

import pytest

from curation.verify import answers_match
from core.errors import DistillError
from evals.analysis import analyse
from evals.scoring import OPEN_PARAMS, answer_items, exemplar_sets, mc_prompt
from evals.settings import CascadeSettings
from evals.task_eval import evaluate_task, is_open_answer, load_task_pool
from prompts.rows import PromptRow
from engine.jobs import request_key
from clients.types import Generation
from tests.doubles import ScriptedTeacher


def _u(*parts) -> float:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:12], 16) / 16**12


def write_numeric(path: Path, n: int = 150) -> dict[str, str]:
    """A gsm8k-like file: a word problem, a number as the label, a rationale; no choices."""
    gold = {}
    lines = []
    for i in range(n):
        a, b = 3 + i, 7 + (i * 13) % 50
        q = f"Tom has {a} apples and buys {b} more. How many apples does he have now? (case {i})"
        gold[q] = str(a + b) if i % 10 else f"{(a + b) * 1000:,}"  # some answers with thousands separators
        lines.append(json.dumps({"input": q, "label": gold[q], "rationale": f"{a} + {b} = {a + b}"}))
    path.write_text("\n".join(lines) + "\n")
    return gold


class OpenScripted(ScriptedTeacher):
    """Generates the right number with probability skill(s), s a per-item number; its token
    log-probs are -(1 - s), so seq_prob is informative. Counts generate() prompts."""

    def __init__(self, name, gold, skill, verify_yes=-0.3):
        super().__init__(name, ["unused"])
        self.gold, self.skill, self.verify_yes = gold, skill, verify_yes
        self.generated, self.scored, self.prompts = 0, 0, []

    def generate(self, prompts, *, max_new_tokens=64, temperature=0.0, num_samples=1, stop=None, seed=0,
                 progress=None):
        out = []
        for prompt in prompts:
            self.generated += 1
            self.prompts.append(prompt)
            question = prompt.rsplit("Question: ", 1)[1].split("\nAnswer:")[0]
            s = _u(self.name, "s", question)
            gold = self.gold[question]
            right = _u(self.name, "right", question) < self.skill(s)
            text = f" {gold if right else int(gold.replace(',', '')) + 1}\nQuestion: and then?"  # first line only
            out.append([Generation(text=text, prompt_tokens=len(prompt.split()), completion_tokens=2,
                                   token_logprobs=[-(1 - s), -(1 - s) / 2], top2_margins=[2 * s, s],
                                   finish_reason="stop") for _ in range(num_samples)])
        return out

    def score_continuations(self, prompt, continuations):
        self.scored += 1
        assert prompt.endswith("Question: Is that answer correct?\nOptions: Yes; No\nAnswer:")
        return [self.verify_yes if c.strip() == "Yes" else -1.0 for c in continuations]


def models(gold):
    return (OpenScripted("stu", gold, lambda s: s), OpenScripted("tea", gold, lambda s: 0.95),
            OpenScripted("tea2", gold, lambda s: 0.9))


OPTS = {"signal": "auto", "calibration": "platt", "target_accuracy": 0.8, "shots": 2, "variants": 3,
        "kd_baseline": True, "resplits": 3, "rationales": 0}


# --- loading ------------------------------------------------------------------------------


def test_a_numeric_file_without_choices_is_open_answer(store, tmp_path):
    path = tmp_path / "math.jsonl"
    gold = write_numeric(path, 40)
    load_task_pool(store, str(path), "run1")
    rows = store.prompts(str(path))
    assert len(rows) == 40 and all(r.choices is None for r in rows)
    assert {r.input: r.gold for r in rows} == gold and all(r.rationale for r in rows)


def test_small_label_sets_stay_classification():
    def rows(labels, choices=None):
        return [PromptRow(id=f"r{i}", source="t", task="t", input=f"q{i}", gold=g, split="test", choices=choices)
                for i, g in enumerate(labels)]
    assert is_open_answer(rows([str(i) for i in range(40)]))
    assert is_open_answer(rows(["1,200", "3/4", "-2.5", "7"]))
    assert not is_open_answer(rows([str(1 + i % 5) for i in range(40)]))  # a 1-5 rating: a label set
    assert is_open_answer(rows([f"l{i}" for i in range(40)]))  # many free-text answers (math, asdiv)
    assert not is_open_answer(rows([f"l{i % 20}" for i in range(40)]))  # 20 words: a label set
    assert not is_open_answer(rows([str(i) for i in range(40)], choices=["0", "1"]))
    assert not is_open_answer([])


# --- answering ----------------------------------------------------------------------------


@pytest.fixture
def numeric(store, tmp_path):
    path = tmp_path / "math.jsonl"
    gold = write_numeric(path, 60)
    load_task_pool(store, str(path), "run0")
    rows = store.prompts(str(path))
    held = [r for r in rows if r.split != "train"]
    return store, gold, held, exemplar_sets(rows, shots=2, variants=3)


def test_open_rows_are_generated_matched_and_cached(numeric):
    store, gold, rows, ex = numeric
    stu = OpenScripted("stu", gold, lambda s: s)
    out = answer_items(store, stu, rows, ex, "run1", "student", self_verify=True)
    assert stu.generated == 3 * len(rows) and stu.scored == len(rows)
    assert stu.prompts[0] == mc_prompt(rows[0], ex[0]) and "Options:" not in stu.prompts[0]
    assert stu.prompts[0].endswith(f"Question: {rows[0].input}\nAnswer:")
    assert f"Answer: {ex[0][0].gold}\n\n" in stu.prompts[0]  # exemplars show their gold answers
    for row, p in zip(rows, out):
        s = _u("stu", "s", row.input)
        assert p["answer"] == p["answer"].strip() and "\n" not in p["answer"]  # the first line only
        assert p["correct"] == answers_match(p["answer"], row.gold)
        f = p["features"]
        assert set(f) == {"seq_prob", "token_q10", "token_margin", "agreement", "verifier"}
        assert f["seq_prob"] == pytest.approx(math.exp(-(1 - s) * 0.75))
        assert f["agreement"] == 1.0 and 0 < f["verifier"] < 1
        assert p["request_key"] == request_key("stu", mc_prompt(row, ex[0]), OPEN_PARAMS, 0)
    assert any(p["correct"] for p in out) and not all(p["correct"] for p in out)
    assert any(p["correct"] and "," in p["answer"] for p in out)  # "3,400" matches gold "3,400"
    req = store.query("SELECT * FROM requests WHERE key = ?", [out[0]["request_key"]])[0]
    assert json.loads(req["extra"])["token_logprobs"] == pytest.approx([-(1 - _u("stu", "s", rows[0].input)),
                                                                        -(1 - _u("stu", "s", rows[0].input)) / 2])
    n = store.count("requests")
    again = OpenScripted("stu", gold, lambda s: 1 - s)  # a model call would now answer differently
    assert answer_items(store, again, rows, ex, "run2", "student", self_verify=True) == out
    assert again.generated == 0 and again.scored == 0 and store.count("requests") == n


def test_open_rows_refuse_debias_and_mixed_rows_are_refused(numeric):
    store, gold, rows, ex = numeric
    with pytest.raises(DistillError, match="this task has none \\(open answers\\): drop --debias"):
        answer_items(store, OpenScripted("stu", gold, lambda s: s), rows, ex, "run1", "teacher", debias="batch")
    mixed = [rows[0], PromptRow(id="m", source="t", task="t", input="a?", gold="x", split="test", choices=["x", "y"])]
    with pytest.raises(DistillError, match="needs choices, or none"):
        answer_items(store, OpenScripted("stu", gold, lambda s: s), mixed, ex, "run1", "teacher")
    assert store.count("requests") == 0


def test_a_tiny_local_model_generates_open_answers_with_token_signals(numeric, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    from clients.local import LocalGenerator

    store, gold, rows, ex = numeric
    model = LocalGenerator("tiny-random", batch_size=8)
    out = answer_items(store, model, rows[:6], ex[:1], "run1", "teacher")
    reqs = {r["key"]: r for r in store.query("SELECT * FROM requests")}
    for row, p in zip(rows[:6], out):
        req = reqs[p["request_key"]]
        extra = json.loads(req["extra"])
        assert len(extra["token_logprobs"]) == len(extra["top2_margins"]) == req["completion_tokens"] <= 20
        assert "\n" not in p["answer"] and p["correct"] == answers_match(p["answer"], row.gold)
        assert set(p["features"]) == {"seq_prob", "token_q10", "token_margin"}
        if req["completion_tokens"]:
            assert 0 < p["features"]["seq_prob"] <= 1 and 0 <= p["features"]["token_margin"] < 1
    n = store.count("requests")
    assert answer_items(store, model, rows[:6], ex[:1], "run2", "teacher") == out
    assert store.count("requests") == n


# --- the whole evaluation -----------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from store.store import Store

    tmp = tmp_path_factory.mktemp("open")
    task = tmp / "math.jsonl"
    gold = write_numeric(task, 150)
    stu, tea, tea2 = models(gold)
    with Store(tmp / "store.duckdb") as store:
        out = evaluate_task(store, str(task), stu, [tea, tea2], tmp / "out", "r1", CascadeSettings(**OPTS))
        calls = (stu.generated, tea.generated, tea2.generated)
        n_requests = store.count("requests")
        stu2, tea_2, tea2_2 = models(gold)
        again = evaluate_task(store, str(task), stu2, [tea_2, tea2_2], tmp / "out2", "r2", CascadeSettings(**OPTS))
        rerun = {"calls": (stu2.generated, tea_2.generated, tea2_2.generated, stu2.scored),
                 "new_requests": store.count("requests") - n_requests}
        with pytest.raises(DistillError) as refused:
            evaluate_task(store, str(task), stu2, [tea_2], tmp / "out3", "r3",
                          CascadeSettings(**dict(OPTS, signal="max_prob")))
        stored = store.query("SELECT * FROM eval_predictions WHERE eval_id = 'eval-r1'")
    return {"out": out, "again": again, "calls": calls, "rerun": rerun, "refused": str(refused.value),
            "stored": stored, "tmp": tmp}


def test_evaluate_task_runs_open_answer_end_to_end(run):
    result = run["out"].result
    assert result.signal in ("seq_prob", "token_q10", "token_margin", "agreement", "learned")
    assert set(result.signal_selection["calibration_auroc"]) <= {"seq_prob", "token_q10", "token_margin",
                                                                 "agreement", "learned"}
    roles = [r.role for r in result.rows]
    assert roles[:2] == ["student", "teacher"] and "cascade" in roles and "chain" in roles
    student = result.row("student")
    assert 0.2 < student.accuracy < 0.9  # skill(s) = s: about half right
    assert "open answers" in result.kd_baseline["skipped"]
    assert result.chain["models"] == ["stu", "tea", "tea2"]
    assert result.resplits.n == 3
    assert run["out"].report.exists() and json.loads(run["out"].cascade_spec.read_text())
    assert {p["model"] for p in run["stored"]} == {"stu", "tea", "tea2"}
    assert all(p["confidence"] is not None for p in run["stored"] if p["model"] == "stu")


def test_the_rerun_makes_no_model_call_and_gives_the_same_result(run):
    stu_calls = run["calls"][0]
    assert stu_calls > 0 and run["calls"][1] > 0
    assert run["rerun"] == {"calls": (0, 0, 0, 0), "new_requests": 0}
    a, b = run["out"].result, run["again"].result
    assert a.signal == b.signal and a.rows == b.rows


def test_an_unavailable_signal_is_one_clear_error(run):
    message = run["refused"]
    assert "\n" not in message and "signal 'max_prob' is not available" in message
    assert "open-answer" in message and "seq_prob" in message and "auto" in message


def test_analyse_without_option_features():
    """`analyse` on predictions that carry only generation signals: auto picks among them and a
    single-class calibration split falls back to an available signal, not max_prob."""
    def preds(name, right):
        return [{"prompt_id": f"p{i}", "split": "calibration" if i < 20 else "test", "answer": "1",
                 "correct": right(i), "tokens": 10, "latency_s": 0.1,
                 "features": {"seq_prob": _u(name, i), "token_q10": _u(name, "q", i), "token_margin": 0.5}}
                for i in range(40)]
    out = analyse({"s": preds("s", lambda i: i % 3 > 0), "t": preds("t", lambda i: True)}, "s", ["t"],
                  signal="auto")
    assert out.signal in ("seq_prob", "token_q10", "token_margin", "learned")
    out = analyse({"s": preds("s", lambda i: True), "t": preds("t", lambda i: True)}, "s", ["t"], signal="auto")
    assert out.signal == "seq_prob"
    with pytest.raises(DistillError, match="'margin' is not available .*use one of seq_prob, token_q10, "
                                           "token_margin, learned or auto"):
        analyse({"s": preds("s", lambda i: True), "t": preds("t", lambda i: True)}, "s", ["t"], signal="margin")
