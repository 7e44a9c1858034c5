"""ReAct rollouts and BFCL calls through the real engine and store, with a scripted teacher."""
import json
from pathlib import Path

import pytest

from core.errors import DistillError
from prompts.rows import PromptRow, stable_id
from synth.react import (TOOL_SCHEMAS, generate_bfcl_calls, generate_trajectories, parse_calls, parse_step,
                         trajectory_messages, trajectory_row)
from tests.doubles import ScriptedTeacher
from synth.tools import DEFAULT_TOOLS, Tool, bfcl_match

PROBLEMS = [("Gus has 22 shells and gives away 11. How many shells are left?", "11"),
            ("Ben has 5 stickers and gets 6 more. How many stickers does Ben have now?", "11")]
CALL = " I need 22 minus 11.\nAction: calculator[22 - 11]"
FINAL = " The calculator says 11.\nFinal Answer: 11"


@pytest.fixture
def arith(store):
    rows = [PromptRow(id=stable_id("arith", q), source="test", task="arith", input=q, gold=gold, split="train")
            for q, gold in PROBLEMS]
    store.add_prompts(rows, "arith")
    return "arith"


def _counting_tools(counter: list) -> dict[str, Tool]:
    calc = DEFAULT_TOOLS["calculator"]

    def counted(text: str) -> str:
        counter.append(text)
        return calc.fn(text)
    return {**DEFAULT_TOOLS, "calculator": Tool(calc.name, calc.description, calc.parameters, counted)}


def _by_kind(store, kind):
    return store.samples(kind=kind, pool="arith")


def test_parse_step_formats():
    assert parse_step(CALL)["tool"] == "calculator" and parse_step(CALL)["tool_input"] == "22 - 11"
    assert parse_step(FINAL)["final_answer"] == "11" and parse_step(FINAL)["thought"] == "The calculator says 11."
    assert parse_step(" x\nAction: calculator\nAction Input: 2 * 3")["tool_input"] == "2 * 3"
    assert parse_step(" Action: python[```python\nprint([1])\n```]")["tool_input"] == "print([1])"
    assert parse_step(" hmm")["parse_error"].startswith("no 'Action:'")
    assert parse_step(" hmm", "length")["parse_error"].startswith("truncated output")
    assert "tool_name[input]" in parse_step(" Action: think harder")["parse_error"]


def test_rollout_stores_steps_with_parent_links_and_a_trl_trajectory(store, arith):
    teacher = ScriptedTeacher("scripted", [CALL, CALL, FINAL, FINAL])
    run = store.start_run("react", {})
    counts = generate_trajectories(store, teacher, arith, run)
    assert counts == {"prompts": 2, "steps": 4, "trajectories": 2, "answered": 2, "new_trajectories": 2}
    assert teacher.calls == 4
    steps, trajs = _by_kind(store, "tool_step"), _by_kind(store, "tool_trajectory")
    assert len(steps) == 4 and len(trajs) == 2
    for traj in trajs:
        mine = {s["id"]: s for s in steps if s["prompt_id"] == traj["prompt_id"]}
        last = mine[traj["parent_id"]]
        first = mine[last["parent_id"]]
        assert first["parent_id"] is None and first["answer"] == "calculator[22 - 11]"
        assert first["reasoning"] == "I need 22 minus 11." and last["answer"] == "11"
        assert traj["answer"] == "11" and traj["parse_error"] is None and traj["request_key"] == last["request_key"]
        assert all(s["teacher"] == "scripted" and s["run_id"] == run for s in mine.values())
        # The observation lives in the request of the step that called the tool.
        extra = store.query("SELECT extra FROM requests WHERE key = ?", [first["request_key"]])[0]["extra"]
        assert json.loads(extra)["react_step"]["observation"] == "11"
        rendered = store.query("SELECT rendered FROM requests WHERE key = ?", [last["request_key"]])[0]["rendered"]
        assert rendered.endswith("Action: calculator[22 - 11]\nObservation: 11\nThought:")

        messages = trajectory_messages(traj)
        assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
        assert messages[0]["content"] == traj["input"]
        assert messages[1]["tool_calls"] == [{"type": "function", "function": {
            "name": "calculator", "arguments": {"expression": "22 - 11"}}}]
        assert messages[2] == {"role": "tool", "name": "calculator", "content": "11"}
        assert messages[3]["content"].endswith("Final Answer: 11")
    row = trajectory_row(trajs[0])
    assert row["tools"] == TOOL_SCHEMAS and {t["function"]["name"] for t in row["tools"]} == {"calculator", "python"}


def test_rerun_replays_from_the_cache_without_model_or_tool_calls(store, arith):
    tool_calls: list = []
    tools = _counting_tools(tool_calls)
    generate_trajectories(store, ScriptedTeacher("scripted", [CALL, CALL, FINAL, FINAL]), arith,
                          store.start_run("react", {}), tools=tools)
    before = {t: store.count(t) for t in ("requests", "samples")}
    assert len(tool_calls) == 2
    again = ScriptedTeacher("scripted", ["never used"])
    counts = generate_trajectories(store, again, arith, store.start_run("react", {}), tools=tools)
    assert again.calls == 0 and len(tool_calls) == 2
    assert counts["new_trajectories"] == 0 and counts["answered"] == 2
    assert {t: store.count(t) for t in ("requests", "samples")} == before


class _DiesOnTurnTwo(ScriptedTeacher):
    def generate(self, prompts, **kw):
        if self.calls >= 2:
            raise KeyboardInterrupt("killed")
        return super().generate(prompts, **kw)


def test_killed_rollout_resumes_where_it_stopped(store, arith):
    with pytest.raises(KeyboardInterrupt):
        generate_trajectories(store, _DiesOnTurnTwo("scripted", [CALL]), arith, store.start_run("react", {}))
    assert len(_by_kind(store, "tool_step")) == 2 and not _by_kind(store, "tool_trajectory")
    resumed = ScriptedTeacher("scripted", [FINAL])
    counts = generate_trajectories(store, resumed, arith, store.start_run("react", {}))
    assert resumed.calls == 2  # only turn two ran; turn one came from the cache
    assert counts["answered"] == 2 and len(_by_kind(store, "tool_step")) == 4


def test_malformed_step_is_stored_and_fails_the_trajectory(store, arith):
    teacher = ScriptedTeacher("scripted", [CALL, CALL, " I am not sure what to do.", FINAL])
    counts = generate_trajectories(store, teacher, arith, store.start_run("react", {}))
    assert counts["answered"] == 1 and counts["trajectories"] == 2
    bad_step = next(s for s in _by_kind(store, "tool_step") if s["parse_error"])
    assert bad_step["parse_error"].startswith("no 'Action:'") and bad_step["answer"] is None
    failed = next(t for t in _by_kind(store, "tool_trajectory") if t["answer"] is None)
    assert failed["parse_error"] == bad_step["parse_error"] and failed["parent_id"] == bad_step["id"]
    assert trajectory_messages(failed)[-1] == {"role": "assistant", "content": "I am not sure what to do."}


def test_step_limit_unknown_tool_and_python_tool(store, arith):
    teacher = ScriptedTeacher("scripted", [" Action: abacus[1 + 1]", " Action: python[print(2 + 3)]"])
    counts = generate_trajectories(store, teacher, arith, store.start_run("react", {}), max_steps=2, limit=1)
    assert counts == {"prompts": 1, "steps": 2, "trajectories": 1, "answered": 0, "new_trajectories": 1}
    traj = _by_kind(store, "tool_trajectory")[0]
    assert traj["parse_error"] == "no final answer within the step limit"
    tools = [m for m in trajectory_messages(traj) if m["role"] == "tool"]
    assert tools[0]["content"].startswith("error: unknown tool 'abacus'") and tools[1] == {
        "role": "tool", "name": "python", "content": "5"}


def test_synthesis_refuses_the_test_split(store, arith):
    with pytest.raises(DistillError, match="test rows never go to teacher synthesis"):
        generate_trajectories(store, ScriptedTeacher("s", [FINAL]), arith, "r", split="test")
    with pytest.raises(DistillError, match="test rows never go to teacher synthesis"):
        generate_bfcl_calls(store, ScriptedTeacher("s", ["[]"]), arith, "r", split="test")


def test_parse_calls_shapes():
    assert parse_calls('```json\n{"name": "f", "arguments": {"a": 1}}\n```') == ([{"name": "f", "arguments": {"a": 1}}], None)
    assert parse_calls('[{"f": {"a": 1}}, {"g": {}}]')[0] == [{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {}}]
    assert parse_calls('{"function": {"name": "f", "arguments": "{\\"a\\": 1}"}}')[0] == [{"name": "f", "arguments": {"a": 1}}]
    assert parse_calls("math.factorial(number=5)")[0] == [{"name": "math.factorial", "arguments": {"number": 5}}]
    assert parse_calls("[]") == ([], None)
    assert parse_calls("I cannot help.") == (None, "no JSON function call in the output")


def test_bfcl_calls_on_real_rows(store):
    pytest.importorskip("bfcl_eval")
    from prompts.bfcl import load_bfcl
    rows = [r for r in load_bfcl("simple") if r.split == "train"][:3]
    store.add_prompts(rows, "bfcl")
    first = sorted(rows, key=lambda r: r.id)[0]
    (name, spec), = json.loads(first.gold)[0].items()
    good = json.dumps({"name": name, "arguments": {k: v[0] for k, v in spec.items() if v[0] != ""}})
    teacher = ScriptedTeacher("scripted", [good, "I do not know", '{"name": "nope", "arguments": {}}'])
    assert generate_bfcl_calls(store, teacher, "bfcl", store.start_run("bfcl", {})) == {"prompts": 3, "requests": 3}
    samples = {s["prompt_id"]: s for s in store.samples(kind="tool_call", pool="bfcl")}
    assert len(samples) == 3
    ok = samples[first.id]
    assert ok["parse_error"] is None and bfcl_match(json.loads(ok["answer"]), first.gold)
    unparsed = [s for s in samples.values() if s["answer"] is None]
    assert len(unparsed) == 1 and unparsed[0]["parse_error"] == "no JSON function call in the output"
    extras = [json.loads(r["extra"]) for r in store.query("SELECT extra FROM requests WHERE purpose = 'bfcl'")]
    assert sorted(e["schema_ok"] for e in extras) == [False, False, True]
    rendered = store.query("SELECT rendered FROM requests WHERE prompt_id = ?", [first.id])[0]["rendered"]
    assert name in rendered and first.input in rendered
    again = ScriptedTeacher("scripted", ["unused"])
    generate_bfcl_calls(store, again, "bfcl", store.start_run("bfcl", {}))
    assert again.calls == 0


# ---- real models: slow --------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("model", ["smollm2-135m-instruct", "gemma-3-270m"])
def test_real_model_rollouts_are_stored(store, model, machine_cache):
    from prompts.pool_file import load_pool_file
    from clients.teachers import get_teacher
    pool = Path(__file__).resolve().parents[2] / "prompts" / "pools" / "arithmetic_word_problems.jsonl"
    store.add_prompts(load_pool_file(pool), "arith")
    teacher = get_teacher(model)
    counts = generate_trajectories(store, teacher, "arith", store.start_run("react", {}), max_steps=3,
                                   max_new_tokens=48, limit=4)
    assert counts["prompts"] == 4 and counts["trajectories"] == 4 and 4 <= counts["steps"] <= 12
    steps, trajs = _by_kind(store, "tool_step"), _by_kind(store, "tool_trajectory")
    assert len(steps) == counts["steps"] and len(trajs) == 4
    assert all(s["teacher"] == model for s in steps + trajs)
    for traj in trajs:  # every trajectory is a well-formed message list, answered or not
        messages = trajectory_messages(traj)
        assert messages[0]["role"] == "user" and (traj["answer"] is not None or traj["parse_error"])
