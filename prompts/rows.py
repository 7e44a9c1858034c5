"""The prompt row every loader returns, and the deterministic split by hashed id."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

SPLITS = ("train", "calibration", "test")


def stable_id(*parts: object) -> str:
    """A short content hash used as a stable id (same input, same id, on every machine)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()
    return digest[:16]


def split_for(example_id: str, calibration: float = 0.2, test: float = 0.2) -> str:
    """Deterministic train / calibration / test assignment from the hash of a stable id.

    The split depends only on the id, so adding examples never moves an existing one
    between splits (test rows stay test rows across versions of a pool).
    """
    u = int(hashlib.sha256(("split:" + example_id).encode()).hexdigest()[:12], 16) / 16**12
    if u < test:
        return "test"
    if u < test + calibration:
        return "calibration"
    return "train"


@dataclass
class PromptRow:
    """One labelled prompt. `gold` is the human answer; `choices` is None for open answers."""

    id: str
    source: str  # bigbench | champ | bfcl | file
    task: str
    input: str
    gold: str
    split: str
    choices: list[str] | None = None
    rationale: str | None = None
    meta: dict = field(default_factory=dict)


def student_row(db_row: dict) -> PromptRow:
    """A prompt row rebuilt from a joined store row (input + choices are all the student sees)."""
    return PromptRow(id=db_row["prompt_id"], source="", task="", input=db_row["input"], gold="", split="train",
                     choices=json.loads(db_row["choices"]) if db_row["choices"] else None)
