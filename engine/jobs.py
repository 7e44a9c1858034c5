"""What a stage hands the request engine: jobs, generation params and the request key (light: no torch)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Callable

from clients.types import Generation


@dataclass(frozen=True)
class GenParams:
    max_new_tokens: int = 64
    temperature: float = 0.0
    num_samples: int = 1
    stop: tuple[str, ...] = ()
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Job:
    """One prompt to send: which prompt row it came from and the exact text the model sees."""

    prompt_id: str
    rendered: str
    template_hash: str | None = None


def request_key(model: str, rendered: str, params: GenParams, sample_index: int) -> str:
    blob = json.dumps([model, rendered, params.as_dict(), sample_index], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


# A hook turning (job, sample index, generation, request key) into extra request fields
# (e.g. answer-choice log-probs) and optional sample rows, computed while the model is loaded.
Postprocess = Callable[[Job, int, Generation, str], tuple[dict, list[dict]]]


def keys_for(teacher_name: str, job: Job, params: GenParams) -> list[str]:
    return [request_key(teacher_name, job.rendered, params, i) for i in range(params.num_samples)]
