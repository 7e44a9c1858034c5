"""Berkeley Function-Calling Leaderboard (bfcl-eval package data): single-turn categories.

Files are JSON lines: `data/BFCL_v4_<category>.json` holds {"id", "question": [[messages]],
"function": [schemas]}; `data/possible_answer/BFCL_v4_<category>.json` holds the expert
{"id", "ground_truth": [{fn: {arg: [accepted values]}}]}. Multi-turn, memory and web-search
categories need BFCL's simulated environments, so they are not offered here.
"""
from __future__ import annotations

import json
from importlib import resources

from core.errors import DistillError
from prompts.rows import PromptRow, split_for, stable_id

PREFIX = "BFCL_v4_"
# BFCL v3 called the Python simple set "simple"; v4 renamed it "simple_python".
ALIASES = {"simple": "simple_python"}
# Categories without a possible_answer file: what a correct reply does instead.
NO_ANSWER = {"irrelevance": "no_call", "live_irrelevance": "no_call", "live_relevance": "any_call"}
_UNSUPPORTED = ("multi_turn", "memory", "web_search", "format_sensitivity")


def _data_dir():
    try:
        return resources.files("bfcl_eval") / "data"
    except ModuleNotFoundError:
        raise DistillError("BFCL is not installed: pip install --no-deps bfcl-eval") from None


def bfcl_categories() -> list[str]:
    """Single-turn categories this loader supports (file names without BFCL_v4_)."""
    names = [f.name[len(PREFIX):-len(".json")] for f in _data_dir().iterdir()
             if f.name.startswith(PREFIX) and f.name.endswith(".json")]
    return sorted(n for n in names if not n.startswith(_UNSUPPORTED))


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_bfcl(category: str = "simple", calibration: float = 0.2, test: float = 0.2) -> list[PromptRow]:
    """Rows of one BFCL category: input = user request, meta["functions"] = tool schemas,
    gold = json.dumps(expert ground truth), or "[]" where no call is the right answer."""
    data = _data_dir()
    name = ALIASES.get(category, category)
    available = bfcl_categories()
    if name not in available:
        raise DistillError(
            f"unknown or unsupported BFCL category '{category}': use one of "
            f"{', '.join(['simple'] + available)}"
        )
    answer_file = data / "possible_answer" / f"{PREFIX}{name}.json"
    truth = {a["id"]: a["ground_truth"] for a in _jsonl(answer_file)} if answer_file.is_file() else {}
    check = NO_ANSWER.get(name, "ast")
    rows = []
    for rec in _jsonl(data / f"{PREFIX}{name}.json"):
        messages = rec["question"][0]  # single-turn: one turn, maybe with a system prompt
        users = [m["content"] for m in messages if m["role"] == "user"]
        if check == "ast":
            if rec["id"] not in truth:
                raise DistillError(f"BFCL test {rec['id']} has no ground truth: pip install --force-reinstall --no-deps bfcl-eval")
            gold = json.dumps(truth[rec["id"]], ensure_ascii=False)
        else:
            gold = "[]" if check == "no_call" else ""
        meta: dict = {"functions": rec["function"], "bfcl_id": rec["id"], "check": check}
        if len(messages) > 1:
            meta["messages"] = messages  # system prompt or earlier turns the request relies on
        rid = stable_id("bfcl", rec["id"])
        rows.append(PromptRow(id=rid, source="bfcl", task=name, input=users[-1].strip(), gold=gold,
                              split=split_for(rid, calibration, test), meta=meta))
    return rows
