"""Scoring answer options with a local model: log-probs of each continuation after a prompt, batched
across items, with a shared few-shot prefix run once per group. LocalGenerator (clients/local.py)
mixes this in; it provides `model`, `tokenizer`, `device`, `batch_size`, `_encode` and `_left_pad`.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch


class ContinuationScoring:
    def score_continuations(self, prompt: str, continuations: list[str]) -> list[float]:
        """Sum of log-probs of each continuation after `prompt` (one batched forward pass)."""
        return [float(sum(d["token_logprobs"])) for d in self.continuation_details(prompt, continuations)]

    def continuation_details(self, prompt: str, continuations: list[str]) -> list[dict]:
        """Per continuation: its tokens' log-probs and, at each of those positions, the margin
        between the model's top-1 and top-2 next-token log-probs (confidence signals).

        Prompt and continuation are tokenized separately and concatenated, so every choice is
        scored on the same prompt tokens even where a joint tokenization would merge across
        the boundary.
        """
        if not continuations:
            return []
        head = self._encode(prompt)
        tails = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
        if len(head) > 1 and all(tails):
            try:
                return self._details_shared_prefix(head, tails)
            except (TypeError, AttributeError, ValueError):  # a cache without batch_repeat_interleave
                pass
        return self._details_joint(head, tails)

    def continuation_details_batch(self, items: Sequence[tuple[str, Sequence[str]]], *,
                                   token_budget: int | None = None) -> list[list[dict]]:
        """`continuation_details` for many (prompt, continuations) items, several items per pass.

        Items are sorted by prompt length and grouped so that (longest prompt x option rows) stays
        under `token_budget` (memory stays bounded, padding small). Each group's prompts run in
        one left-padded forward pass whose KV cache is then gathered once per option; the options
        (all but their last token) run in a second pass over that cache. The vocabulary head is
        only applied where an option token is predicted (Gemma's 262k head dominates the cost),
        and single-token options need no second pass at all. Results match `continuation_details`
        item by item (float noise of padded matmuls aside, well under 1e-4 in fp32).
        """
        budget = token_budget or self.score_token_budget
        encoded = [(self._encode(p), [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in conts])
                   for p, conts in items]
        out: list[list[dict]] = [[] for _ in items]
        batchable = []
        for i, (head, tails) in enumerate(encoded):
            if head and tails and all(tails):
                batchable.append(i)
            elif tails:  # an empty prompt or option: the per-item path handles the edge cases
                out[i] = self.continuation_details(items[i][0], list(items[i][1]))
        clusters = scoring_clusters([items[i][0] for i in batchable], [len(encoded[i][0]) for i in batchable])
        for cluster in clusters:  # a group never spans two few-shot blocks
            group: list[int] = []
            for i in (batchable[k] for k in cluster):
                rows = sum(len(encoded[j][1]) for j in group) + len(encoded[i][1])
                if group and max(len(encoded[j][0]) for j in [*group, i]) * rows > budget:
                    self._run_group(group, encoded, out, items)
                    group = []
                group.append(i)
            if group:
                self._run_group(group, encoded, out, items)
        return out

    def _run_group(self, group: list[int], encoded: list, out: list, items: Sequence) -> None:
        try:
            details = self._details_batch([encoded[i][0] for i in group], [encoded[i][1] for i in group])
        except (TypeError, AttributeError, NotImplementedError):  # no tensor logits_to_keep / cache gather
            details = [self.continuation_details(items[i][0], list(items[i][1])) for i in group]
        for i, d in zip(group, details):
            out[i] = d

    def _shared_prefix(self, heads: list[list[int]]) -> int:
        """Tokens all prompts of a group share (their few-shot block), when worth a pass of its own.

        Every prompt keeps at least one token of its own (its last position predicts the options).
        The prompts' own parts are left-padded after the shared block, so padding sits inside the
        sequence: a sliding-window model only shares while the whole sequence fits its window
        (its window counts cache slots, padding included).
        """
        if len(heads) < 2:
            return 0
        n = min(len(h) for h in heads) - 1
        first = heads[0]
        for h in heads[1:]:
            n = next((k for k in range(n) if h[k] != first[k]), n)
        window = getattr(self.model.config, "sliding_window", None)
        if window and max(len(h) for h in heads) + 64 > window:
            return 0
        return n if n >= MIN_SHARED_TOKENS else 0

    def _details_batch(self, heads: list[list[int]], tails_per_item: list[list[list[int]]]) -> list[list[dict]]:
        """Per item, per option: token log-probs and top-2 margins (see continuation_details_batch)."""
        owner = [i for i, tails in enumerate(tails_per_item) for _ in tails]  # option row -> its item
        flat = [t for tails in tails_per_item for t in tails]
        longest = max(len(t) for t in flat)
        shared = self._shared_prefix(heads)
        with torch.no_grad():
            # Left padding puts every prompt's last token last: one head row per item predicts
            # each option's first token.
            if shared:  # the few-shot block the items share runs once, its cache copied per item
                prefix = self.model(input_ids=torch.tensor([heads[0][:shared]], device=self.device), use_cache=True,
                                    logits_to_keep=1)
                cache = prefix.past_key_values
                cache.batch_repeat_interleave(len(heads))
                ids, own = self._left_pad([h[shared:] for h in heads])
                mask = torch.cat([torch.ones((len(heads), shared), dtype=own.dtype, device=own.device), own], dim=1)
                first = self.model(input_ids=ids, attention_mask=mask, past_key_values=cache,
                                   position_ids=shared + (own.cumsum(-1) - 1).clamp(min=0),
                                   use_cache=longest > 1, logits_to_keep=1)
            else:
                ids, mask = self._left_pad(heads)
                first = self.model(input_ids=ids, attention_mask=mask,
                                   position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                                   use_cache=longest > 1, logits_to_keep=1)
            lp0 = torch.log_softmax(first.logits[:, -1].float(), dim=-1)
            top0 = lp0.topk(2, dim=-1).values
            margin0 = (top0[:, 0] - top0[:, 1]).tolist()
            firsts = lp0[torch.tensor(owner, device=lp0.device), torch.tensor([t[0] for t in flat], device=lp0.device)]
            logprobs = [[v] for v in firsts.tolist()]
            margins = [[margin0[o]] for o in owner]
            cache = first.past_key_values
            del first, lp0
            if longest > 1:
                # Option token j >= 1 is predicted at option position j-1: feed all but the last token.
                index = torch.tensor(owner, device=ids.device)
                cache.batch_select_indices(index)
                width = longest - 1
                tail_ids = torch.full((len(flat), width), self.tokenizer.pad_token_id, dtype=torch.long)
                tail_mask = torch.zeros((len(flat), width), dtype=torch.long)
                for row, t in enumerate(flat):
                    tail_ids[row, : len(t) - 1] = torch.tensor(t[:-1], dtype=torch.long)
                    tail_mask[row, : len(t) - 1] = 1
                tail_ids, tail_mask = tail_ids.to(self.device), tail_mask.to(self.device)
                starts = torch.tensor([len(heads[o]) for o in owner], device=self.device)
                keep = tail_mask.bool()
                inputs = {"input_ids": tail_ids, "attention_mask": torch.cat([mask[index], tail_mask], dim=1),
                              "position_ids": starts[:, None] + torch.arange(width, device=self.device),
                              "past_key_values": cache}
                try:  # only the real option positions reach the vocabulary head: (n_tokens, vocab)
                    logits = self.model(**inputs, logits_to_keep=keep).logits
                except TypeError:  # architectures without tensor logits_to_keep
                    logits = self.model(**inputs).logits[keep]
                if logits.dim() == 3:  # a model that ignored the mask and kept every position
                    logits = logits[keep]
                lp = torch.log_softmax(logits.float(), dim=-1)
                targets = torch.tensor([tok for t in flat for tok in t[1:]], device=lp.device)
                chosen = lp.gather(1, targets[:, None]).squeeze(1).tolist()
                top = lp.topk(2, dim=-1).values
                gaps = (top[:, 0] - top[:, 1]).tolist()
                pos = 0
                for row, t in enumerate(flat):
                    n = len(t) - 1
                    logprobs[row] += chosen[pos: pos + n]
                    margins[row] += gaps[pos: pos + n]
                    pos += n
        per_row = [{"token_logprobs": lp_, "top2_margins": m} for lp_, m in zip(logprobs, margins)]
        out: list[list[dict]] = [[] for _ in heads]
        for row, o in enumerate(owner):
            out[o].append(per_row[row])
        return out

    def _details(self, logprobs: torch.Tensor, tails: list[list[int]]) -> list[dict]:
        """logprobs[row, j] predicts tails[row][j]."""
        top2 = logprobs.topk(2, dim=-1).values
        out = []
        for row, tail in enumerate(tails):
            n = len(tail)
            target = torch.tensor(tail, device=logprobs.device, dtype=torch.long).unsqueeze(1)
            out.append({"token_logprobs": logprobs[row, :n].gather(1, target).squeeze(1).tolist(),
                        "top2_margins": (top2[row, :n, 0] - top2[row, :n, 1]).tolist()})
        return out

    def _details_shared_prefix(self, head: list[int], tails: list[list[int]]) -> list[dict]:
        """The prompt runs once; its KV cache is copied per option (options share long few-shot
        prompts, so this is ~k times cheaper than k full sequences)."""
        with torch.no_grad():
            first = self.model(input_ids=torch.tensor([head], device=self.device), use_cache=True, logits_to_keep=1)
            cache = first.past_key_values
            cache.batch_repeat_interleave(len(tails))
            width = max(len(t) for t in tails)
            ids = torch.full((len(tails), width), self.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.ones((len(tails), len(head) + width), dtype=torch.long)
            for row, t in enumerate(tails):
                ids[row, : len(t)] = torch.tensor(t, dtype=torch.long)
                mask[row, len(head) + len(t):] = 0
            positions = torch.arange(len(head), len(head) + width).expand(len(tails), -1)
            rest = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                              position_ids=positions.to(self.device), past_key_values=cache).logits
        # Tail token 0 is predicted by the prompt's last position, token j by tail position j-1.
        logits = torch.cat([first.logits[:, -1:].expand(len(tails), -1, -1), rest[:, :-1]], dim=1)
        return self._details(torch.log_softmax(logits.float(), dim=-1), tails)

    def _details_joint(self, head: list[int], tails: list[list[int]]) -> list[dict]:
        ids, mask = self._left_pad([head + t for t in tails])
        # Left padding right-aligns every continuation, so only the last few positions' logits
        # are needed (Gemma's 262k vocab makes full-sequence logits costly).
        keep = max(len(t) for t in tails) + 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            try:
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
            except TypeError:  # architectures without logits_to_keep
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -keep:]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        # Logits at position j predict token j+1: row r's tail starts len(tail) before the end.
        starts = [keep - 1 - len(t) for t in tails]
        width = max(len(t) for t in tails)
        aligned = torch.stack([torch.nn.functional.pad(logprobs[r, s: keep - 1], (0, 0, 0, width - (keep - 1 - s)))
                               for r, s in enumerate(starts)])
        return self._details(aligned, tails)


MIN_SHARED_TOKENS = 16  # a shared prompt prefix shorter than this is not worth its own pass
MIN_SHARED_CHARS = 64  # prompts sharing this many leading characters are scored together


def scoring_order(prompts: Sequence[str], lengths: Sequence[int]) -> list[int]:
    """The order to score prompts in (`scoring_clusters` one after the other)."""
    return [i for cluster in scoring_clusters(prompts, lengths) for i in cluster]


def scoring_clusters(prompts: Sequence[str], lengths: Sequence[int]) -> list[list[int]]:
    """Prompts that share a few-shot block (a long common prefix) as one cluster each, so a
    group's shared block runs once; longest first within each cluster, and prompts sharing
    nothing (zero-shot) as one last cluster, longest first (little padding)."""
    by_text = sorted(range(len(prompts)), key=lambda i: prompts[i])
    clusters: list[list[int]] = []
    for i in by_text:
        if clusters and len(os.path.commonprefix([prompts[clusters[-1][-1]], prompts[i]])) >= MIN_SHARED_CHARS:
            clusters[-1].append(i)
        else:
            clusters.append([i])
    alone = [i for c in clusters if len(c) == 1 for i in c]
    groups = [c for c in clusters if len(c) > 1] + ([alone] if alone else [])
    return [sorted(c, key=lambda i: -lengths[i]) for c in groups]
