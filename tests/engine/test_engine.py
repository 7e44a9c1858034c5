from synth.cot import CotParams, generate_traces, parse_trace
from engine.jobs import GenParams, Job, request_key
from engine.engine import run_requests
from tests.doubles import ScriptedTeacher

import pytest

from core.errors import DistillError

TRACE = "Water is denser.\nAnswer: No"


def test_request_key_changes_with_each_part():
    p = GenParams(max_new_tokens=8)
    base = request_key("m", "hello", p, 0)
    assert base == request_key("m", "hello", p, 0)
    assert len({base, request_key("m2", "hello", p, 0), request_key("m", "hello!", p, 0),
                request_key("m", "hello", p, 1), request_key("m", "hello", GenParams(max_new_tokens=9), 0)}) == 5


def test_rerun_hits_cache_and_changed_param_reruns_only_its_requests(store, pool):
    teacher = ScriptedTeacher("scripted", [TRACE])
    jobs = [Job(prompt_id=r.id, rendered=r.input) for r in store.prompts(pool)[:5]]
    run_requests(store, teacher, jobs, GenParams(num_samples=2), purpose="t", run_id="r1")
    assert teacher.calls == 10
    run_requests(store, teacher, jobs, GenParams(num_samples=2), purpose="t", run_id="r2")
    assert teacher.calls == 10  # every request was cached
    assert store.run_summary("r2")["scripted"]["cache_hits"] == 10 and store.run_summary("r2")["scripted"]["requests"] == 0
    assert store.run_summary("r1")["scripted"]["cache_hits"] == 0
    run_requests(store, teacher, jobs[:2], GenParams(num_samples=2, temperature=0.5), purpose="t", run_id="r3")
    assert teacher.calls == 14  # only the requests the new parameter changes
    assert store.count("requests") == 14


def test_duplicate_jobs_are_generated_once(store, pool):
    # Two samples with the same text give the judge the same prompt: one request, one generation.
    teacher = ScriptedTeacher("scripted", [TRACE])
    jobs = [Job(prompt_id=r.id, rendered=r.input) for r in store.prompts(pool)[:3]]
    done = run_requests(store, teacher, jobs + jobs[:2], GenParams(num_samples=2), purpose="t", run_id="r1")
    assert teacher.calls == 6 and len(done) == 6 and store.count("requests") == 6


def test_traces_keep_reasoning_and_answer_apart_and_store_parse_errors(store, pool):
    teacher = ScriptedTeacher("scripted", [TRACE, "I am not sure.\nAnswer: maybe"])
    generate_traces(store, teacher, pool, CotParams(num_samples=2), run_id="r1")
    samples = store.samples(kind="cot", pool=pool)
    n_train = len(store.prompts(pool, split="train"))
    assert len(samples) == 2 * n_train
    good = [s for s in samples if s["parse_error"] is None]
    bad = [s for s in samples if s["parse_error"] is not None]
    assert good and bad, "malformed outputs are stored with their error, not dropped"
    assert all(s["reasoning"] == "Water is denser." and s["answer"] == "No" for s in good)
    assert all(s["answer"] is None and "not one of the options" in s["parse_error"] for s in bad)


def test_missing_answer_line_is_read_from_the_options_and_truncation_is_an_error(store, pool):
    long_text = " ".join(["word"] * 100)
    teacher = ScriptedTeacher("scripted", ["Pears float on water.", long_text], choice_scores={"No": -0.1, "Yes": -3.0})
    generate_traces(store, teacher, pool, CotParams(num_samples=2, max_new_tokens=64), run_id="r1")
    samples = store.samples(kind="cot", pool=pool)
    scored = [s for s in samples if s["reasoning"] == "Pears float on water."]
    truncated = [s for s in samples if s["reasoning"].startswith("word")]
    assert scored and all(s["answer"] == "No" and s["parse_error"] is None for s in scored)
    assert truncated and all(s["answer"] is None and "truncated" in s["parse_error"] for s in truncated)
    sources = {r["extra"] for r in store.query("SELECT extra FROM requests")}
    assert any("scored_options" in x for x in sources) and any("parsed" in x for x in sources)


def test_synthesis_refuses_test_split(store, pool):
    with pytest.raises(DistillError, match="test rows never"):
        generate_traces(store, ScriptedTeacher("t", [TRACE]), pool, CotParams(), run_id="r", split="test")


def test_fewshot_prompts_never_contain_test_rows(store, pool):
    teacher = ScriptedTeacher("scripted", [TRACE], is_chat=False)
    generate_traces(store, teacher, pool, CotParams(num_samples=1, num_examples=3), run_id="r1")
    rendered = " ".join(r["rendered"] for r in store.query("SELECT rendered FROM requests"))
    for row in store.prompts(pool, split="test") + store.prompts(pool, split="calibration"):
        assert row.input not in rendered


@pytest.mark.parametrize("text,choices,answer,error", [
    ("Because.\nAnswer: Yes", ["Yes", "No"], "Yes", None),
    ("Because.\nthe answer is: no.", ["Yes", "No"], "No", None),
    ("Because.\nAnswer: maybe", ["Yes", "No"], None, "not one of the options"),
    ("no final line", ["Yes", "No"], None, "no 'Answer:'"),
    ("x\nAnswer: 42", None, "42", None),
])
def test_parse_trace(text, choices, answer, error):
    _, got, err = parse_trace(text, choices)
    assert got == answer
    assert (err is None) if error is None else (error in err)


def test_every_trace_joins_to_its_template_text(store, pool):
    generate_traces(store, ScriptedTeacher("t", [TRACE]), pool, CotParams(num_samples=1), run_id="r")
    rows = store.query("SELECT t.name, t.text FROM samples s JOIN requests r ON r.key = s.request_key "
                       "JOIN templates t ON t.hash = r.template_hash")
    assert len(rows) == store.count("samples") and all("Question" in r["text"] for r in rows)
