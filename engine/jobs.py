"""What a stage hands the request engine: jobs, generation params and the request key (light: no torch)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Callable

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


def model_key(model: Any) -> str:
    """The model part of a request key: the model's `cache_name` when it has one, else its name.

    A local model in bf16 (the GPU default) scores and samples differently from the fp32 run on a
    CPU, so it has its own cache entries (LocalGenerator.cache_name = "name@bfloat16"); fp32 keeps
    the bare name, so stores written before keep their cache."""
    return getattr(model, "cache_name", None) or model.name


def request_key(model: str, rendered: str, params: GenParams, sample_index: int) -> str:
    blob = json.dumps([model, rendered, params.as_dict(), sample_index], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


# A hook turning (job, sample index, generation, request key) into extra request fields
# (e.g. answer-choice log-probs) and optional sample rows, computed while the model is loaded.
Postprocess = Callable[[Job, int, Generation, str], tuple[dict, list[dict]]]


def keys_for(teacher_name: str, job: Job, params: GenParams) -> list[str]:
    return [request_key(teacher_name, job.rendered, params, i) for i in range(params.num_samples)]
