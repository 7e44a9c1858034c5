"""Batched local generation with per-token log-probs, for teachers that run on this machine.

Throughput on CPU comes from batching (about 5x at batch 16 vs batch 1), so prompts are sorted
by length to keep left padding small. Log-probs are taken from the raw model distribution
(before temperature) because downstream confidence filters compare them across temperatures.
"""
from __future__ import annotations

import bisect
import copy
import sys
from collections.abc import Sequence
from typing import Any

import torch

from clients.control_tokens import escape_control_tokens, special_strings, warn_escaped
from tqdm.auto import tqdm
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from clients.device import pick_device, pick_dtype
from clients.local_scoring import ContinuationScoring
from clients.models import load_model
from clients.types import Generation


class _StepRecorder(LogitsProcessor):
    """Records log-softmax stats of the raw logits at every decoding step.

    Keeping only the previous step's distribution bounds memory to one batch x vocab tensor,
    whereas output_logits would hold every step (about 1 GB for Gemma's 262k vocab at batch 16).
    It is placed before the temperature warper, and the model's generation_config is cleared
    of other processors, so the scores it sees are the model's raw logits.
    """

    def __init__(self, top_k: int = 0) -> None:
        self.prev: torch.Tensor | None = None
        self.logprobs: list[torch.Tensor] = []
        self.margins: list[torch.Tensor] = []
        self.top_k = top_k
        self.tops: list[tuple[torch.Tensor, torch.Tensor]] = []  # per step: (values, ids), batch x k

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prev is not None:  # the token chosen last step is now the last input id
            self.logprobs.append(self.prev.gather(1, input_ids[:, -1:]).squeeze(1))
        lp = torch.log_softmax(scores.float(), dim=-1)
        top = lp.topk(max(2, self.top_k), dim=-1)
        self.margins.append(top.values[:, 0] - top.values[:, 1])
        if self.top_k:
            self.tops.append((top.values[:, :self.top_k], top.indices[:, :self.top_k]))
        self.prev = lp
        return scores

    def finish(self, new_tokens: torch.Tensor) -> tuple[list[list[float]], list[list[float]]]:
        """Per-row logprobs and margins for the generated tokens `new_tokens` (batch x steps)."""
        if self.prev is not None:
            self.logprobs.append(self.prev.gather(1, new_tokens[:, -1:]).squeeze(1))
            self.prev = None
        if not self.logprobs:
            empty: list[list[float]] = [[] for _ in range(new_tokens.shape[0])]
            return empty, [[] for _ in range(new_tokens.shape[0])]
        return torch.stack(self.logprobs, 1).tolist(), torch.stack(self.margins, 1).tolist()

    def top_alternatives(self, row: int) -> list[list[tuple[int, float]]]:
        """The top-k (token id, log-prob) pairs at every step of one row (empty unless top_k > 0)."""
        return [list(zip(ids[row].tolist(), vals[row].tolist())) for vals, ids in self.tops]


class _StopOnStrings(StoppingCriteria):
    """Marks a row done once its decoded completion contains any stop string.

    Decoding the text (rather than matching token ids) catches stop strings that span or sit
    inside tokens, e.g. "\\n" inside a ".\\n" token. Rows finish independently and generate()
    halts when all are done.
    """

    def __init__(self, tokenizer: Any, stops: list[str], prompt_len: int) -> None:
        self.tokenizer, self.stops, self.prompt_len = tokenizer, stops, prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len :], skip_special_tokens=True)
        done = [any(s in t for s in self.stops) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class LocalGenerator(ContinuationScoring):
    """A local causal LM wrapped for batched, reproducible generation and scoring."""

    # Option scoring (continuation_details_batch): padded prompt tokens x option rows per pass.
    score_token_budget = 8192

    def __init__(self, model_name: str, batch_size: int = 16, device: str | None = "auto",
                 dtype: str | None = None) -> None:
        """`device`: auto (the GPU when there is one, else cpu; DISTILL_DEVICE overrides), cpu, cuda
        or cuda:N. `dtype`: None picks bf16 on a GPU with native bf16, fp32 elsewhere (clients/device.py)."""
        self.model_name = self.name = model_name
        self.batch_size = batch_size
        self.device = pick_device(device)  # resolved once: inputs are moved to this exact device
        self.dtype = pick_dtype(self.device, dtype)
        # Request keys use cache_name (engine.jobs.model_key): a bf16 model's answers and scores differ
        # from fp32's, so they get their own cache entries; fp32 keeps the bare name (older stores hit).
        fmt = str(self.dtype).removeprefix("torch.")
        self.cache_name = model_name if fmt == "float32" else f"{model_name}@{fmt}"
        self.model, self.tokenizer = load_model(model_name, self.device, self.dtype)
        gc = self.model.generation_config
        eos = gc.eos_token_id if isinstance(gc.eos_token_id, list) else [gc.eos_token_id]
        self.eos_ids = sorted({i for i in [*eos, self.tokenizer.eos_token_id] if i is not None})
        # generate() fills unset options from the model's generation_config (e.g. Gemma's top_k=64,
        # top_p=0.95); a blank one makes sampling depend only on our arguments.
        self.model.generation_config = GenerationConfig(
            bos_token_id=gc.bos_token_id, eos_token_id=self.eos_ids, pad_token_id=self.tokenizer.pad_token_id
        )
        self.is_chat = bool(getattr(self.tokenizer, "chat_template", None))
        self.control_tokens = special_strings(self.tokenizer)  # escaped in user text (clients/control_tokens.py)

    # ---- prompts -------------------------------------------------------------------------

    def render(self, messages_or_text: str | Sequence[dict[str, str]]) -> str:
        """Turn chat messages into the model's prompt string; plain strings pass through."""
        specials = self.control_tokens
        if isinstance(messages_or_text, str):  # a completion prompt built from our templates and user text
            bos = self.tokenizer.bos_token or ""
            head = bos if bos and messages_or_text.startswith(bos) else ""
            text, found = escape_control_tokens(messages_or_text[len(head):], specials)
            warn_escaped(self.name, found)
            return head + text
        messages, found = [], 0
        for m in messages_or_text:  # user text must not open or close turns: escape before the template
            content, n = escape_control_tokens(m["content"], specials)
            messages.append({**m, "content": content})
            found += n
        warn_escaped(self.name, found)
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        # Base models have no template: a plain transcript is the format they continue best.
        lines = []
        for m in messages:
            role = {"user": "User", "assistant": "Assistant"}.get(m["role"])
            lines.append(f"{role}: {m['content']}" if role else m["content"])
        return "\n".join(lines) + "\nAssistant:"

    def _encode(self, text: str) -> list[int]:
        # Chat templates already start with the bos text (e.g. Gemma's "<bos>"); adding another
        # would put the model off-distribution.
        bos = self.tokenizer.bos_token
        add_special = not (bos and text.startswith(bos))
        return self.tokenizer(text, add_special_tokens=add_special)["input_ids"]

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            if s:
                ids[row, width - len(s) :] = torch.tensor(s, dtype=torch.long)
                mask[row, width - len(s) :] = 1
        return ids.to(self.device), mask.to(self.device)

    # ---- generation ----------------------------------------------------------------------

    def generate(
        self,
        prompts: list[str],
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        num_samples: int = 1,
        stop: list[str] | None = None,
        seed: int = 0,
        progress: str | None = None,
        top_k: int = 0,
    ) -> list[list[Generation]]:
        """Generate `num_samples` completions per rendered prompt; returns one list per prompt."""
        greedy = temperature <= 0.0
        runs = 1 if greedy else num_samples  # greedy samples are identical: decode once, copy
        stops = [s for s in (stop or []) if s]
        encoded = [self._encode(p) for p in prompts]
        items = [(i, s) for i in range(len(prompts)) for s in range(runs)]
        # Longest first: similar lengths share a batch (less padding) and a too-large batch
        # fails on the first batch rather than at the end.
        items.sort(key=lambda it: -len(encoded[it[0]]))
        results: list[list[Generation | None]] = [[None] * runs for _ in prompts]
        bar = tqdm(
            total=len(prompts) * num_samples, desc=progress, unit="seq", file=sys.stderr, disable=progress is None
        )
        try:
            for b, start in enumerate(range(0, len(items), self.batch_size)):
                batch = items[start : start + self.batch_size]
                gens = self._generate_batch(
                    [encoded[i] for i, _ in batch], max_new_tokens, temperature, stops, seed * 1_000_003 + b, top_k
                )
                for (i, s), g in zip(batch, gens):
                    results[i][s] = g
                bar.update(len(batch) * (num_samples if greedy else 1))
        finally:
            bar.close()
        if greedy:
            return [[copy.deepcopy(r[0]) for _ in range(num_samples)] for r in results]
        return results  # type: ignore[return-value]

    def _generate_batch(
        self, seqs: list[list[int]], max_new_tokens: int, temperature: float, stops: list[str], seed: int,
        top_k: int = 0,
    ) -> list[Generation]:
        ids, mask = self._left_pad(seqs)
        prompt_len = ids.shape[1]
        recorder = _StepRecorder(top_k)
        criteria = StoppingCriteriaList([_StopOnStrings(self.tokenizer, stops, prompt_len)] if stops else [])
        sampling = temperature > 0.0
        options: dict[str, Any] = {"do_sample": sampling, "max_new_tokens": max_new_tokens}
        if sampling:
            # Pure temperature sampling: top_k=0 / top_p=1 switch off the library's default truncation.
            options.update(temperature=temperature, top_k=0, top_p=1.0)
        on_cuda = ids.device.type == "cuda"
        fork_devices = [ids.device.index or 0] if on_cuda else []
        # A forked RNG seeded per batch makes sampling reproducible without disturbing the
        # caller's global random state.
        with torch.no_grad(), torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(seed)
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                logits_processor=LogitsProcessorList([recorder]),
                stopping_criteria=criteria,
                **options,
            )
        new_tokens = out[:, prompt_len:]
        logprobs, margins = recorder.finish(new_tokens)
        gens = [
            self._finish_row(new_tokens[row].tolist(), len(seqs[row]), logprobs[row], margins[row], stops)
            for row in range(len(seqs))
        ]
        for row, gen in enumerate(gens):
            gen.token_ids = new_tokens[row, : gen.completion_tokens].tolist()
            if top_k:
                gen.top_logprobs = recorder.top_alternatives(row)[: gen.completion_tokens]
        return gens

    def _finish_row(
        self, ids: list[int], prompt_tokens: int, logprobs: list[float], margins: list[float], stops: list[str]
    ) -> Generation:
        n, reason = len(ids), "length"
        for k, tok in enumerate(ids):
            if tok in self.eos_ids:
                n, reason = k, "stop"
                break
        ids = ids[:n]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = min((pos for pos in (text.find(s) for s in stops) if pos >= 0), default=-1)
        if cut >= 0:
            text, reason = text[:cut], "stop"
            n = self._tokens_covering(ids, cut)
        return Generation(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=n,
            token_logprobs=logprobs[:n],
            top2_margins=margins[:n],
            finish_reason=reason,
        )

    def _tokens_covering(self, ids: list[int], chars: int) -> int:
        """Fewest leading tokens whose text reaches `chars` characters (decoded length grows with k)."""
        if chars == 0:
            return 0
        lengths = _LazyDecodedLengths(self.tokenizer, ids)
        return bisect.bisect_left(lengths, chars, lo=1, hi=len(ids))


class _LazyDecodedLengths:
    """Sequence view k -> len(decode(ids[:k])), decoded on demand so bisect costs O(log n) decodes."""

    def __init__(self, tokenizer: Any, ids: list[int]) -> None:
        self.tokenizer, self.ids = tokenizer, ids

    def __len__(self) -> int:
        return len(self.ids) + 1

    def __getitem__(self, k: int) -> int:
        return len(self.tokenizer.decode(self.ids[:k], skip_special_tokens=True))
