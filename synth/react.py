"""Tool-use teacher signal: multi-turn ReAct rollouts, and single-turn BFCL function calls.

A rollout advances all active prompts one step at a time, so every turn is one batched pass
through the request engine. The request key hashes the rendered history, and each step's
tool observation is stored in its request's `extra`: a re-run replays finished steps from
the cache (no model call, no tool call) and continues where it stopped. Every step is a
sample (kind "tool_step", linked to the previous one by parent_id); a finished rollout is
one "tool_trajectory" sample holding the TRL tool-calling message list.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field

from store.store import Store
from core.errors import DistillError
from prompts.rows import PromptRow
from prompts.templates import render, template_hash, template_source
from engine.jobs import GenParams, Job, model_key, request_key
from engine.engine import run_requests
from clients.types import Generation
from clients.teachers import Teacher
from synth.tools import DEFAULT_TOOLS, Tool, check_call_against_schema

# The model must not write the observation itself: cut there (and at a new question).
STOP = ("\nObservation:", "\nQuestion:", "\n\n\n")
TEMPLATES = ("react.j2", "bfcl_call.j2")
TOOL_SCHEMAS: list[dict] = [t.schema() for t in DEFAULT_TOOLS.values()]
_OBS_MAX = 2000  # long tool output would crowd small models' context on later turns

_FINAL_RE = re.compile(r"final\s*answer\s*:[ \t]*", re.IGNORECASE)
_ACTION_RE = re.compile(r"\baction\s*:[ \t]*", re.IGNORECASE)
_NEXT_RE = re.compile(r"\n\s*(thought|action|final\s*answer)\s*:", re.IGNORECASE)
_CALL_RE = re.compile(r"([A-Za-z_][\w.-]*)\s*(?:\[(.*)\]|\((.*)\))", re.DOTALL)
_INPUT_RE = re.compile(r"^([A-Za-z_][\w.-]*)\s*\n\s*action\s*input\s*:\s*(.*)$", re.IGNORECASE | re.DOTALL)


def _unfence(text: str) -> str:
    text = re.sub(r"^```[a-z]*\s*", "", text.strip())
    return re.sub(r"\s*```$", "", text).strip()


def parse_step(text: str, finish_reason: str = "stop") -> dict:
    """One step of model text (after "Thought:") as {thought, tool, tool_input, final_answer,
    parse_error}. Whichever of "Action:" / "Final Answer:" comes first wins."""
    text = re.sub(r"^\s*thought\s*:", "", text, flags=re.IGNORECASE)
    step = {"thought": "", "tool": None, "tool_input": None, "final_answer": None, "parse_error": None}
    final, action = _FINAL_RE.search(text), _ACTION_RE.search(text)
    if action and (not final or action.start() < final.start()):
        step["thought"] = text[:action.start()].strip()
        rest = text[action.end():]
        nxt = _NEXT_RE.search(rest)
        rest = (rest[:nxt.start()] if nxt else rest).strip()
        call, alt = _CALL_RE.match(rest), _INPUT_RE.match(rest)  # tool[x] / tool(x) / LangChain style
        if call:
            step["tool"], step["tool_input"] = call.group(1), _unfence(call.group(2) or call.group(3) or "")
        elif alt:
            step["tool"], step["tool_input"] = alt.group(1), _unfence(alt.group(2))
        else:
            step["parse_error"] = f"action {rest[:60]!r} is not written as tool_name[input]"
    elif final:
        step["thought"] = text[:final.start()].strip()
        answer = next((line.strip() for line in text[final.end():].splitlines() if line.strip()), "")
        step["final_answer"] = answer or None
        step["parse_error"] = None if answer else "empty 'Final Answer:'"
    else:
        step["thought"] = text.strip()
        step["parse_error"] = "no 'Action:' or 'Final Answer:' in the step"
    if step["parse_error"] and finish_reason == "length":
        step["parse_error"] = f"truncated output ({step['parse_error']})"
    return step


def _observe(step: dict, tools: dict[str, Tool]) -> str | None:
    """Run the step's tool. An unknown tool is an observation the model can recover from."""
    if step["tool"] is None:
        return None
    tool = tools.get(step["tool"])
    if tool is None:
        return f"error: unknown tool {step['tool']!r}; use one of {sorted(tools)}"
    out = tool.run(step["tool_input"])
    return out if len(out) <= _OBS_MAX else out[:_OBS_MAX] + "\n...[truncated]"


@dataclass
class _Rollout:
    row: PromptRow
    transcript: str = ""  # canonical "Thought/Action/Observation" text of the finished steps
    messages: list[dict] = field(default_factory=list)
    parent: str | None = None  # sample id of the last step
    last_key: str | None = None
    answer: str | None = None
    error: str | None = None
    done: bool = False


def _apply(r: _Rollout, step: dict, key: str, raw: str, tools: dict[str, Tool], last_turn: bool) -> None:
    """Advance a rollout by one stored step (fresh or replayed from the cache)."""
    r.parent, r.last_key = "s" + key[:23], key
    if step["parse_error"]:
        r.messages.append({"role": "assistant", "content": raw.strip()})
        r.error, r.done = step["parse_error"], True
    elif step["final_answer"] is not None:
        content = f"{step['thought']}\nFinal Answer: {step['final_answer']}".strip()
        r.messages.append({"role": "assistant", "content": content})
        r.answer, r.done = step["final_answer"], True
    else:
        tool = tools.get(step["tool"])
        args = {tool.arg if tool else "input": step["tool_input"]}
        r.messages += [{"role": "assistant", "content": step["thought"],
                        "tool_calls": [{"type": "function", "function": {"name": step["tool"], "arguments": args}}]},
                       {"role": "tool", "name": step["tool"], "content": step["observation"]}]
        r.transcript += (f"Thought: {step['thought']}\nAction: {step['tool']}[{step['tool_input']}]\n"
                         f"Observation: {step['observation']}\n")
        if last_turn:
            r.error, r.done = "no final answer within the step limit", True


def _register(store: Store) -> None:
    for name in TEMPLATES:
        store.add_template(name, template_source(name), template_hash(name))


def _react_head(teacher: Teacher, row: PromptRow, tools: dict[str, Tool]) -> str:
    text = render("react.j2", tools=list(tools.values()), question=row.input)
    # Chat models get the protocol as the user turn and continue a pre-filled assistant turn.
    return teacher.render([{"role": "user", "content": text}]) if teacher.is_chat else text + "\n"


def _as_dict(extra: object) -> dict:
    return json.loads(extra) if isinstance(extra, str) else (extra or {})


def generate_trajectories(store: Store, teacher: Teacher, pool: str, run_id: str, *,
                          tools: dict[str, Tool] = DEFAULT_TOOLS, max_steps: int = 4,
                          max_new_tokens: int = 96, temperature: float = 0.0, split: str = "train",
                          limit: int | None = None) -> dict:
    """ReAct rollouts (≤ max_steps model calls each) for a pool's split; returns counts."""
    if split == "test":
        raise DistillError("test rows never go to teacher synthesis: use --split train or calibration")
    rows = store.prompts(pool, split=split, limit=limit)
    if not rows:
        raise DistillError(f"pool '{pool}' has no {split} prompts: load a task first (distill data load)")
    _register(store)
    params = GenParams(max_new_tokens=max_new_tokens, temperature=temperature, stop=STOP)
    rollouts = {row.id: _Rollout(row, messages=[{"role": "user", "content": row.input}]) for row in rows}
    heads = {row.id: _react_head(teacher, row, tools) for row in rows}

    def postprocess(job: Job, _i: int, gen: Generation, key: str) -> tuple[dict, list[dict]]:
        step = parse_step(gen.text, gen.finish_reason)
        step["observation"] = _observe(step, tools)
        shown = (f"{step['tool']}[{step['tool_input']}]" if step["tool"] else step["final_answer"])
        sample = dict(id="s" + key[:23], prompt_id=job.prompt_id, request_key=key, teacher=teacher.name,
                      kind="tool_step", reasoning=step["thought"], answer=shown,
                      parse_error=step["parse_error"], parent_id=rollouts[job.prompt_id].parent)
        return {"react_step": step}, [sample]

    steps = 0
    for turn in range(max_steps):
        active = [r for r in rollouts.values() if not r.done]
        if not active:
            break
        jobs = [Job(r.row.id, heads[r.row.id] + r.transcript + "Thought:", template_hash("react.j2")) for r in active]
        done = run_requests(store, teacher, jobs, params, purpose="react", run_id=run_id,
                            postprocess=postprocess, label=f"react {teacher.name} step {turn + 1}")
        for r, job in zip(active, jobs):
            key = request_key(model_key(teacher), job.rendered, params, 0)
            step = _as_dict(done[key]["extra"])["react_step"]
            _apply(r, step, key, done[key]["response"] or "", tools, last_turn=turn == max_steps - 1)
            steps += 1
    # Trajectory rows are written once; a re-run finds them and adds nothing.
    have = {s["id"] for s in store.samples(kind="tool_trajectory", pool=pool)}
    finals = [dict(id="j" + r.last_key[:23], prompt_id=r.row.id, request_key=r.last_key, teacher=teacher.name,
                   kind="tool_trajectory", reasoning=json.dumps(r.messages, ensure_ascii=False),
                   answer=r.answer, parse_error=r.error, parent_id=r.parent, run_id=run_id)
              for r in rollouts.values() if r.done and "j" + r.last_key[:23] not in have]
    store.add_requests_and_samples([], finals)
    return {"prompts": len(rows), "steps": steps, "trajectories": sum(r.done for r in rollouts.values()),
            "answered": sum(r.answer is not None for r in rollouts.values()), "new_trajectories": len(finals)}


def trajectory_messages(tool_trajectory_sample: dict) -> list[dict]:
    """TRL tool-calling chat messages of a stored trajectory (user, assistant+tool_calls, tool, ...)."""
    return json.loads(tool_trajectory_sample["reasoning"])


def trajectory_row(tool_trajectory_sample: dict, tools: dict[str, Tool] = DEFAULT_TOOLS) -> dict:
    """One SFT export row in TRL's tool-calling format: {"messages": [...], "tools": [...]}."""
    return {"messages": trajectory_messages(tool_trajectory_sample), "tools": [t.schema() for t in tools.values()]}


# ---- BFCL single-turn calls ---------------------------------------------------------------

def _normalize(obj: object) -> list[dict] | None:
    """Call(s) in any common shape as [{"name", "arguments"}]; None if it is not a call."""
    if isinstance(obj, list):
        parts = [_normalize(o) for o in obj]
        return None if any(p is None for p in parts) else [c for p in parts for c in p]  # type: ignore[union-attr]
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):  # OpenAI tool_call shape
        return _normalize(obj["function"])
    if isinstance(obj.get("name"), str):
        args = obj.get("arguments", obj.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                return None
        return [{"name": obj["name"], "arguments": args}] if isinstance(args, dict) else None
    if obj and all(isinstance(k, str) and isinstance(v, dict) for k, v in obj.items()):
        return [{"name": k, "arguments": v} for k, v in obj.items()]  # BFCL's {fn: {args}} shape
    return None


def _python_calls(text: str) -> list[dict] | None:
    """BFCL's native syntax, `fn(a=1, b="x")` or a list of such calls."""
    for candidate in [_unfence(text)] + text.splitlines():
        try:
            node = ast.parse(candidate.strip(), mode="eval").body
            nodes = node.elts if isinstance(node, (ast.List, ast.Tuple)) else [node]
            if nodes and all(isinstance(n, ast.Call) and not n.args for n in nodes):
                return [{"name": ast.unparse(n.func), "arguments": {k.arg: ast.literal_eval(k.value)
                                                                    for k in n.keywords}} for n in nodes]
        except (SyntaxError, ValueError, TypeError):
            continue
    return None


def parse_calls(text: str) -> tuple[list[dict] | None, str | None]:
    """The first JSON (or Python-literal) call(s) in model output, as [{"name", "arguments"}]."""
    decoder = json.JSONDecoder()
    for start in (i for i, ch in enumerate(text) if ch in "[{"):
        try:
            obj, _ = decoder.raw_decode(text[start:])
        except ValueError:
            continue
        calls = _normalize(obj)
        if calls is not None:
            return calls, None
    calls = _python_calls(text)
    return (calls, None) if calls is not None else (None, "no JSON function call in the output")


def _bfcl_prompt(teacher: Teacher, row: PromptRow) -> str:
    user = render("bfcl_call.j2", functions=json.dumps(row.meta["functions"], ensure_ascii=False),
                  question=row.input)
    if not teacher.is_chat:
        return user + "\nCall:"
    # Live BFCL rows may carry a system prompt the request relies on; keep it.
    system = [m for m in row.meta.get("messages", []) if m.get("role") == "system"]
    return teacher.render(system + [{"role": "user", "content": user}])


def generate_bfcl_calls(store: Store, teacher: Teacher, pool: str, run_id: str, *, max_new_tokens: int = 128,
                        split: str = "train", limit: int | None = None) -> dict:
    """One JSON function call per BFCL prompt; stored as kind "tool_call" samples; returns counts."""
    if split == "test":
        raise DistillError("test rows never go to teacher synthesis: use --split train or calibration")
    rows = [r for r in store.prompts(pool, split=split, limit=limit) if "functions" in r.meta]
    if not rows:
        raise DistillError(f"pool '{pool}' has no BFCL {split} prompts: "
                           "load one first (distill data load bfcl:simple)")
    _register(store)
    by_id = {r.id: r for r in rows}
    jobs = [Job(r.id, _bfcl_prompt(teacher, r), template_hash("bfcl_call.j2")) for r in rows]

    def postprocess(job: Job, _i: int, gen: Generation, key: str) -> tuple[dict, list[dict]]:
        calls, error = parse_calls(gen.text)
        if error and gen.finish_reason == "length":
            error = f"truncated output ({error})"
        checks = [check_call_against_schema(c, by_id[job.prompt_id].meta["functions"]) for c in calls or []]
        bad = next((detail for ok, detail in checks if not ok), None)
        extra = {"schema_ok": calls is not None and bad is None,
                 "schema_detail": bad or ("ok" if calls is not None else error)}
        sample = dict(id="s" + key[:23], prompt_id=job.prompt_id, request_key=key, teacher=teacher.name,
                      kind="tool_call", reasoning=None,
                      answer=None if calls is None else json.dumps(calls, ensure_ascii=False),
                      parse_error=error, parent_id=None)
        return extra, [sample]

    params = GenParams(max_new_tokens=max_new_tokens, stop=("\nQuestion:", "\n\n\n"))
    done = run_requests(store, teacher, jobs, params, purpose="bfcl", run_id=run_id, postprocess=postprocess,
                        label=f"bfcl {teacher.name}")
    return {"prompts": len(rows), "requests": len(done)}
