"""CHAMP: 270 competition math problems with human solutions, plus recorded teacher chats.

Each problem carries 72 recorded conversations (GPT-3.5, GPT-4, GPT-4 Turbo, PaLM 2
Medium x 18 prompt settings). Every one ends the same way:
    ... user: <problem prompt>, assistant: <solution>,
    user: SUMMARY_PROMPT, assistant: <one-sentence final answer>
so we keep, per model and setting, the chat the teacher saw before its solution, the
solution, and the final answer: nothing is lost (the summary prompt is constant) and
an importer can use (prompt, output) directly as a teacher output.
"""
from __future__ import annotations

import json
from importlib import resources

from core.errors import DistillError
from prompts.rows import PromptRow, split_for, stable_id

SUMMARY_PROMPT = (
    "Now, summarize the answer above in one sentence, without any intermediate steps or explanations."
)
# CHAMP roles -> chat roles. "Imputation" turns are few-shot demonstrations written into
# the chat as assistant turns; earlier "Model.*" turns (e.g. a concept explanation the
# model gave first) are part of what the teacher saw before solving.
_ROLES = {"System": "system", "User": "user", "Imputation": "assistant"}


def _role(role: str) -> str:
    return "assistant" if role.startswith("Model.") else _ROLES.get(role, role.lower())


def _recorded(problem: dict) -> dict:
    """{model: {setting: {"prompt", "output", "answer", "truncated"[, "first_wrong_step"]}}}."""
    out: dict[str, dict[str, dict]] = {}
    for key, conv in problem["conversations"].items():
        model, _, setting = key.partition("|")
        msgs = conv["messages"]
        solution, answer = msgs[-3], msgs[-1]
        entry = {
            "prompt": [{"role": _role(m["role"]), "content": m["text"]} for m in msgs[:-3]],
            "output": solution["text"],
            "answer": answer["text"],  # None when the solution hit the length limit
            # LENGTH_CURRENT on the solution turn: the model ran out of tokens mid-answer.
            "truncated": solution.get("error") is not None,
        }
        fws = problem.get("fws_annotations", {}).get(key)
        if fws:
            # Human "first wrong step" label: a span of `output`; None/None = no mistake.
            entry["first_wrong_step"] = [fws.get("start_idx"), fws.get("end_idx")]
        out.setdefault(model, {})[setting] = entry
    return out


def load_champ(calibration: float = 0.2, test: float = 0.2) -> list[PromptRow]:
    """One row per CHAMP problem; meta["recorded"] holds the four teachers' outputs."""
    try:
        path = resources.files("champ_dataset") / "dataset_files" / "v0.json"
    except ModuleNotFoundError:
        raise DistillError("CHAMP is not installed: pip install champ-dataset") from None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DistillError(f"cannot read CHAMP data ({e}): pip install --force-reinstall champ-dataset") from e
    rows = []
    for pid, p in data["problems"].items():
        rid = stable_id("champ", pid)
        steps = [s["_text"] for s in p.get("solution", {}).get("steps", [])]
        rows.append(PromptRow(
            id=rid, source="champ", task="champ", input=p["_text"].strip(),
            gold=p["_answer"].strip(), split=split_for(rid, calibration, test),
            rationale="\n".join(steps) or None,
            meta={"problem_id": pid, "category": p.get("category"), "recorded": _recorded(p)},
        ))
    return rows
