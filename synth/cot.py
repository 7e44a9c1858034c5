"""Chain-of-thought traces: prompt building, answer parsing and the synthesis stage.

Teachers see few-shot exemplars with human rationales drawn from the TRAIN split only;
test rows never reach a synthesis prompt. Reasoning and final answer are stored apart; a
trace whose answer cannot be parsed is stored with its parse error, never dropped.
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

from store.store import Store
from core.errors import DistillError
from prompts.rows import PromptRow
from prompts.templates import render, template_hash, template_source
from engine.jobs import GenParams, Job
from engine.engine import run_requests
from clients.types import Generation
from clients.teachers import Teacher

ANSWER_RE = re.compile(r"answer\s*(?:is)?\s*[:\-]\s*(.+)", re.IGNORECASE)
# Base models continue few-shot text with a new "Question:"; cut there.
STOP = ("\nQuestion:", "\n\n\n")


@dataclass(frozen=True)
class CotParams:
    num_samples: int = 2
    temperature: float = 0.7
    max_new_tokens: int = 64
    num_examples: int = 2
    seed: int = 0

    def gen_params(self) -> GenParams:
        return GenParams(max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                         num_samples=self.num_samples, stop=STOP, seed=self.seed)


TEMPLATES = ("cot_fewshot.j2", "cot_chat.j2")


def register_templates(store: Store) -> None:
    """Store the template texts so every request's template_hash joins to the text that made it."""
    for name in TEMPLATES:
        store.add_template(name, template_source(name), template_hash(name))


def fewshot_examples(train_rows: list[PromptRow], k: int, exclude: str, seed: int = 0) -> list[PromptRow]:
    """k train rows with a human rationale, the same for every prompt but never the prompt itself."""
    pool = [r for r in train_rows if r.rationale and r.split == "train"]
    random.Random(seed).shuffle(pool)
    return [r for r in pool if r.id != exclude][:k]


def build_prompt(teacher: Teacher, row: PromptRow, examples: list[PromptRow]) -> tuple[str, str]:
    """The exact text the teacher sees, and the hash of the template that made it."""
    if any(ex.split != "train" for ex in examples):
        raise DistillError("few-shot exemplars must come from the train split")
    if teacher.is_chat:
        user = render("cot_chat.j2", examples=examples, row=row)
        # Pre-filling "Reasoning:" keeps small chat models in the trace format.
        return teacher.render([{"role": "user", "content": user}]) + "Reasoning:", template_hash("cot_chat.j2")
    return render("cot_fewshot.j2", examples=examples, row=row), template_hash("cot_fewshot.j2")


def match_choice(answer: str, choices: list[str] | None) -> str | None:
    """Map free answer text to one of the choices (case-insensitive, leading match)."""
    text = answer.strip().strip(".").strip().lower()
    if not choices:
        return answer.strip() or None
    for choice in sorted(choices, key=len, reverse=True):
        c = choice.lower()
        if text == c or text.startswith(c + " ") or text.startswith(c + ".") or text.startswith(c + ","):
            return choice
    return None


def parse_trace(text: str, choices: list[str] | None) -> tuple[str, str | None, str | None]:
    """Split a trace into (reasoning, answer, parse error). Text after the answer line is dropped."""
    first = ANSWER_RE.search(text)
    if not first:
        return text.strip(), None, "no 'Answer:' line in the output"
    reasoning = text[:first.start()].strip()
    raw = first.group(1).strip().splitlines()[0] if first.group(1).strip() else ""
    answer = match_choice(raw, choices)
    if answer is None:
        return reasoning, None, f"answer {raw[:60]!r} is not one of the options"
    return reasoning, answer, None


def answer_prefix(text: str) -> str:
    """The generated text up to its first 'Answer:' (added when the model wrote none)."""
    first = ANSWER_RE.search(text)
    return text[:first.start(1)].rstrip() if first else text.rstrip() + "\nAnswer:"


def choice_probs(model: Teacher, rendered: str, text: str, choices: list[str]) -> list[float]:
    """The model's own distribution over the options, read at its answer position."""
    logps = model.score_continuations(rendered + answer_prefix(text), [" " + c for c in choices])
    top = max(logps)
    weights = [math.exp(lp - top) for lp in logps]
    return [w / sum(weights) for w in weights]


def trace_sample(teacher: Teacher, prompt: PromptRow, rendered: str, gen: Generation,
                 key: str) -> tuple[dict, dict]:
    """The sample row of one trace, and extra request fields saying how its answer was read.

    Chat models often end their turn after the reasoning without an "Answer:" line. For
    multiple-choice prompts the teacher's answer is then read from its own distribution
    over the options at the answer position (one scoring pass, as lm-eval-harness does).
    A trace cut off by the token limit stays an error: its reasoning is incomplete.
    """
    reasoning, answer, error = parse_trace(gen.text, prompt.choices)
    extra: dict = {"answer_source": "parsed"}
    if answer is None and gen.finish_reason == "length":
        error = f"truncated output ({error})"
    elif (answer is None and prompt.choices and error and error.startswith("no 'Answer:'")
          and not hasattr(teacher, "agenerate")):  # API teachers cannot score continuations
        probs = choice_probs(teacher, rendered, gen.text, prompt.choices)
        answer, error = prompt.choices[probs.index(max(probs))], None
        extra = {"answer_source": "scored_options", "choice_probs": probs}
    sample = dict(id="s" + key[:23], prompt_id=prompt.id, request_key=key, teacher=teacher.name,
                  kind="cot", reasoning=reasoning, answer=answer, parse_error=error, parent_id=None)
    return sample, extra


def generate_traces(store: Store, teacher: Teacher, pool: str, params: CotParams, run_id: str,
                    split: str = "train", limit: int | None = None) -> dict:
    """Chain-of-thought traces from one teacher for a pool's split; returns counts."""
    if split == "test":
        raise DistillError("test rows never go to teacher synthesis: use --split train or calibration")
    rows = store.prompts(pool, split=split, limit=limit)
    if not rows:
        raise DistillError(f"pool '{pool}' has no {split} prompts: load a task first (distill data load)")
    train_rows = store.prompts(pool, split="train")
    register_templates(store)
    jobs, by_id = [], {r.id: r for r in rows}
    for row in rows:
        examples = fewshot_examples(train_rows, params.num_examples, exclude=row.id, seed=params.seed)
        rendered, t_hash = build_prompt(teacher, row, examples)
        jobs.append(Job(prompt_id=row.id, rendered=rendered, template_hash=t_hash))

    def postprocess(job: Job, _i: int, gen: Generation, key: str) -> tuple[dict, list[dict]]:
        sample, extra = trace_sample(teacher, by_id[job.prompt_id], job.rendered, gen, key)
        return extra, [sample]

    done = run_requests(store, teacher, jobs, params.gen_params(), purpose="cot", run_id=run_id,
                        postprocess=postprocess, label=f"cot {teacher.name}")
    return {"prompts": len(rows), "requests": len(done)}
