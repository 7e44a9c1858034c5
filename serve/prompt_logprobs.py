"""vLLM's scoring extension of /v1/completions: `prompt_logprobs`, token-id prompts, `echo`.

A teacher behind `distill serve` is asked for log-probs of text it is *given* (the student's
samples), not of text it writes. vLLM answers that with `prompt_logprobs=k`: per prompt
position, a dict {token id: {logprob, rank, decoded_token}} holding the top-k tokens plus the
actual token (its true rank, even outside the top k); position 0 is null. TRL's
ServerDistillationTrainer (VLLMClient.get_sequence_logprobs) sends exactly

    POST /v1/completions {"model", "prompt": [[ids...], ...], "max_tokens": 1,
                          "temperature": T, "prompt_logprobs": k}

and reads choices[i]["prompt_logprobs"] (keys as strings, sorted by "rank").

Log-probs are log_softmax(logits / temperature), vLLM's `--logprobs-mode processed_logprobs`,
which TRL's docs ask for: the trainer divides the student's logits by the same temperature.
temperature 0 means greedy, scored on the raw logits. max_tokens is 0 or 1: the one new token
comes free from the last position's logits; longer generation goes through the text path.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from serve.openai_api import bad

if TYPE_CHECKING:  # torch loads only when a local model scores: an echo or cascade server never needs it
    import torch

MAX_SEQUENCES = 1024  # per request; TRL sends one training batch


@dataclass(frozen=True)
class ScoreRequest:
    sequences: list[list[int]]
    prompt_logprobs: int | None  # top-k per prompt position; None: not asked
    logprobs: int | None  # top-n for the generated token (and, with echo, the prompt tokens)
    max_tokens: int  # 0 or 1
    echo: bool
    temperature: float
    seed: int


def wants_scoring(body: dict[str, Any]) -> bool:
    """True for requests the text-generation path cannot answer: prompt_logprobs or token ids."""
    prompt = body.get("prompt")
    token_ids = isinstance(prompt, list) and bool(prompt) and not isinstance(prompt[0], str)
    echo_only = bool(body.get("echo")) and body.get("max_tokens") in (0, 1)
    return token_ids or echo_only or body.get("prompt_logprobs") is not None


def _count(body: dict[str, Any], name: str, vocab: int) -> int | None:
    """vLLM's convention: an integer >= 0, or -1 for the whole vocabulary."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise bad(f"'{name}' must be a non-negative integer or -1, got {value!r}", name)
    return vocab if value == -1 else min(value, vocab)


def parse(body: dict[str, Any], tokenizer: Any, vocab: int, default_seed: int) -> ScoreRequest:
    """The scoring request in `body`, or the 400 it deserves. String prompts are tokenized here."""
    prompt = body.get("prompt")
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], int)):
        prompt = [prompt]  # one prompt, as text or as token ids
    if not isinstance(prompt, list) or not prompt or len(prompt) > MAX_SEQUENCES:
        raise bad(f"'prompt' must be text, token ids, or a list of 1 to {MAX_SEQUENCES} of either", "prompt")
    special = body.get("add_special_tokens", True) is not False
    sequences = []
    for p in prompt:
        ids = tokenizer(p, add_special_tokens=special)["input_ids"] if isinstance(p, str) else p
        if not isinstance(ids, list) or not ids or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < vocab for i in ids):
            raise bad(f"each prompt must be non-empty text or token ids in [0, {vocab})", "prompt")
        sequences.append(ids)
    max_tokens = body.get("max_tokens", 1)
    if max_tokens not in (0, 1) or isinstance(max_tokens, bool):
        raise bad("with prompt_logprobs or token-id prompts, 'max_tokens' must be 0 or 1 (scoring only)",
                  "max_tokens")
    temperature = body.get("temperature")
    temperature = 1.0 if temperature is None else temperature
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 100:
        raise bad(f"'temperature' must be a number from 0 to 100, got {temperature!r}", "temperature")
    if body.get("n", 1) != 1:
        raise bad("'n' must be 1 when scoring", "n")
    seed = body.get("seed")
    seed = default_seed if not isinstance(seed, int) or isinstance(seed, bool) else seed
    return ScoreRequest(sequences, _count(body, "prompt_logprobs", vocab), _count(body, "logprobs", vocab),
                        max_tokens, bool(body.get("echo")), float(temperature), seed)


def _position_logprobs(logits: torch.Tensor, ids: list[int], k: int, temperature: float
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For positions 1..n-1 of one sequence: actual lp, actual rank, top-k lps, top-k ids; and the
    next-token log-probs after the last position (for max_tokens=1)."""
    import torch

    scale = temperature if temperature > 0 else 1.0
    lp = torch.log_softmax(logits.float() / scale, dim=-1)  # (n, vocab)
    target = torch.tensor(ids[1:], dtype=torch.long)
    actual = lp[:-1].gather(1, target[:, None]).squeeze(1)
    rank = (lp[:-1] > actual[:, None]).sum(-1) + 1  # 1-based, as vLLM reports it
    top = lp[:-1].topk(k, dim=-1) if k else None
    empty = torch.empty((len(ids) - 1, 0))
    return (actual, rank, top.values if top else empty, top.indices if top else empty.long(), lp[-1])


def _entries(ids_lps: list[tuple[int, float, int]], decoded: dict[int, str]) -> dict[str, dict[str, Any]]:
    # Top-k ranks come last so they win for an actual token that is also in the top k, as in vLLM.
    return {str(i): {"logprob": lp, "rank": r, "decoded_token": decoded[i]} for i, lp, r in ids_lps}


def score(model: Any, tokenizer: Any, req: ScoreRequest, batch_size: int) -> list[dict[str, Any]]:
    """One vLLM completion choice per sequence; `batch_size` sequences share a forward pass."""
    import torch

    with torch.no_grad():
        return _score(model, tokenizer, req, batch_size)


def _score(model: Any, tokenizer: Any, req: ScoreRequest, batch_size: int) -> list[dict[str, Any]]:
    import torch

    k = max(req.prompt_logprobs or 0, req.logprobs if req.echo and req.logprobs else 0)
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(req.seed)
    rows = []
    for start in range(0, len(req.sequences), batch_size):
        chunk = req.sequences[start:start + batch_size]
        width = max(len(s) for s in chunk)
        # Right padding: every real token keeps positions 0..n-1, so its logits match an unpadded pass.
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, s in enumerate(chunk):
            ids[r, :len(s)], mask[r, :len(s)] = torch.tensor(s), 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.cpu()
        for r, s in enumerate(chunk):
            rows.append((s, _position_logprobs(logits[r, :len(s)], s, k, req.temperature)))
    return [_choice(index, s, parts, req, tokenizer, gen) for index, (s, parts) in enumerate(rows)]


def _choice(index: int, seq: list[int], parts: tuple, req: ScoreRequest, tokenizer: Any,
            gen: torch.Generator) -> dict[str, Any]:
    import torch

    actual, rank, top_lp, top_ids, next_lp = parts
    new_ids: list[int] = []
    if req.max_tokens:
        if req.temperature > 0:
            new_ids = [int(torch.multinomial(next_lp.exp(), 1, generator=gen))]
        else:
            new_ids = [int(next_lp.argmax())]
    n = req.logprobs or 0
    next_top = next_lp.topk(n) if n else None
    # Decode each distinct id once: TRL asks for up to 100 alternatives at hundreds of positions.
    wanted = {*seq, *new_ids, *top_ids.flatten().tolist(), *(next_top.indices.tolist() if next_top else [])}
    decoded = dict(zip(wanted, tokenizer.batch_decode([[i] for i in wanted])))
    actual_l, rank_l, top_lp_l, top_ids_l = actual.tolist(), rank.tolist(), top_lp.tolist(), top_ids.tolist()

    def alternatives(pos: int, m: int) -> list[tuple[int, float, int]]:
        own = [(seq[pos + 1], actual_l[pos], rank_l[pos])]
        return own + [(i, lp, r + 1) for r, (i, lp) in enumerate(zip(top_ids_l[pos][:m], top_lp_l[pos][:m]))]

    prompt_lps = None
    if req.prompt_logprobs is not None:
        prompt_lps = [None] + [_entries(alternatives(p, req.prompt_logprobs), decoded) for p in range(len(seq) - 1)]
    logprobs = None
    if req.logprobs is not None:  # OpenAI's legacy completions shape: tokens / token_logprobs / top_logprobs
        tokens, token_lps, tops = [], [], []
        if req.echo:
            tokens += [decoded[i] for i in seq]
            token_lps += [None, *actual_l]
            tops += [None] + [{decoded[i]: lp for i, lp, _ in alternatives(p, n)} for p in range(len(seq) - 1)]
        for i in new_ids:
            tokens.append(decoded[i])
            token_lps.append(float(next_lp[i]))
            alts = [(i, float(next_lp[i]))]  # the chosen token, then the top n, as vLLM lists them
            if next_top:
                alts += zip(next_top.indices.tolist(), next_top.values.tolist())
            tops.append({decoded[j]: lp for j, lp in alts})
        offsets, pos = [], 0
        for t in tokens:
            offsets.append(pos)
            pos += len(t)
        logprobs = {"text_offset": offsets, "token_logprobs": token_lps, "tokens": tokens, "top_logprobs": tops}
    text = tokenizer.decode(new_ids)
    if req.echo:
        text = tokenizer.decode(seq) + text
    eos = tokenizer.eos_token_id
    finish = "stop" if new_ids and new_ids[-1] == eos else "length"
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish, "stop_reason": None,
            "prompt_logprobs": prompt_lps, "new_tokens": len(new_ids)}


def response(model_name: str, req: ScoreRequest, choices: list[dict[str, Any]]) -> dict[str, Any]:
    prompt = sum(len(s) for s in req.sequences)
    completion = sum(c.pop("new_tokens") for c in choices)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": model_name, "choices": choices, "usage": usage}
