"""Classic knowledge-distillation baseline for multiple-choice / classification tasks.

A small head over frozen sentence embeddings (MiniLM by default) is trained on the teachers'
soft labels with Hinton's temperature KD, so the report can compare the generative student
against the cheapest possible student fed the same teacher signal.

One model covers fixed label sets and per-item choices: each (input, choice) pair is scored
by an MLP over [e_x, e_c, e_x*e_c, |e_x-e_c|] and the scores are soft-maxed over the item's own
choices (padded + masked, so items with 2, 3 or 5 choices share a batch).
By default the student never sees human labels: the hard-label term uses the teacher's argmax.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

Embedder = Callable[[list[str]], np.ndarray]
MASKED = -1e9  # logit for padded choices: finite, so softmax gives exactly 0 without NaNs
PROB_TOL = 1e-3  # teacher probs come from a softmax; more drift than this means a bug upstream


def _default_embed(texts: list[str]) -> np.ndarray:
    from curation.embed import (
        embed_texts,  # lazy: loading MiniLM is only needed on the real path
    )
    return embed_texts(texts)


def _validate(inputs: list[str], choices: list[list[str]], teacher_probs: list[list[float]] | None,
              gold: list[int] | None) -> None:
    if not inputs:
        raise ValueError("classic KD: no items (inputs is empty)")
    if len(choices) != len(inputs):
        raise ValueError(f"classic KD: {len(inputs)} inputs but {len(choices)} choice lists")
    for i, c in enumerate(choices):
        if not c:
            raise ValueError(f"classic KD: item {i} has no choices")
    if teacher_probs is not None:
        if len(teacher_probs) != len(inputs):
            raise ValueError(f"classic KD: {len(inputs)} inputs but {len(teacher_probs)} teacher distributions")
        for i, (p, c) in enumerate(zip(teacher_probs, choices)):
            if len(p) != len(c):
                raise ValueError(f"classic KD: item {i} has {len(c)} choices but {len(p)} teacher probs")
            a = np.asarray(p, dtype=np.float64)
            if not np.all(np.isfinite(a)) or np.any(a < 0):
                raise ValueError(f"classic KD: item {i} teacher probs must be finite and >= 0, got {list(p)}")
            if abs(a.sum() - 1.0) > PROB_TOL:
                raise ValueError(f"classic KD: item {i} teacher probs sum to {a.sum():.4f}, not 1")
    if gold is not None:
        if len(gold) != len(inputs):
            raise ValueError(f"classic KD: {len(inputs)} inputs but {len(gold)} gold labels")
        for i, (g, c) in enumerate(zip(gold, choices)):
            if not 0 <= g < len(c):
                raise ValueError(f"classic KD: item {i} gold index {g} is outside its {len(c)} choices")


def _encode(embed: Embedder, inputs: list[str], choices: list[list[str]]) -> tuple[torch.Tensor, ...]:
    """(x (N,d), c (N,K,d), mask (N,K) bool); each distinct choice string is embedded once."""
    uniq = sorted({t for c in choices for t in c})
    ex = np.asarray(embed(list(inputs)), dtype=np.float32)
    ec = np.asarray(embed(uniq), dtype=np.float32)
    if ex.ndim != 2 or ex.shape[0] != len(inputs) or ec.shape != (len(uniq), ex.shape[1]):
        raise ValueError(f"classic KD: embedder returned shapes {ex.shape} / {ec.shape}, expected (n, dim)")
    row = {t: i for i, t in enumerate(uniq)}
    k = max(len(c) for c in choices)
    c_vecs = np.zeros((len(inputs), k, ex.shape[1]), dtype=np.float32)
    mask = np.zeros((len(inputs), k), dtype=bool)
    for i, c in enumerate(choices):
        c_vecs[i, :len(c)] = ec[[row[t] for t in c]]
        mask[i, :len(c)] = True
    return torch.from_numpy(ex), torch.from_numpy(c_vecs), torch.from_numpy(mask)


def _pad(rows: list[list[float]], k: int) -> torch.Tensor:
    out = np.zeros((len(rows), k), dtype=np.float32)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return torch.from_numpy(out)


class PairScorer(nn.Module):
    """logit(x, c) = MLP([x, c, x*c, |x-c|]); the product/difference terms let a small MLP see matches."""

    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.mlp = nn.Sequential(nn.Linear(4 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1).expand_as(c)
        logits = self.mlp(torch.cat([x, c, x * c, (x - c).abs()], dim=-1)).squeeze(-1)
        return logits.masked_fill(~mask, MASKED)


def kd_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, mask: torch.Tensor,
            hard: torch.Tensor, temperature: float = 2.0, alpha: float = 0.9) -> torch.Tensor:
    """Hinton KD: alpha * T^2 * KL(p_teacher^T || p_student^T) + (1-alpha) * CE(student, hard).
    T^2 keeps the soft term's gradient scale independent of T. Padded choices must be masked."""
    t_logits = torch.log(teacher_probs.clamp_min(1e-12)).masked_fill(~mask, MASKED)
    p_t = torch.softmax(t_logits / temperature, dim=-1)
    log_p_s = torch.log_softmax(student_logits.masked_fill(~mask, MASKED) / temperature, dim=-1)
    # xlogy: 0 * log 0 = 0 on padded slots instead of NaN
    kl = (torch.special.xlogy(p_t, p_t) - p_t * log_p_s).masked_fill(~mask, 0.0).sum(-1).mean()
    ce = nn.functional.cross_entropy(student_logits.masked_fill(~mask, MASKED), hard)
    return alpha * temperature ** 2 * kl + (1 - alpha) * ce


class ClassicKDStudent:
    """A trained PairScorer plus the embedder it expects; predict_proba runs at T=1."""

    def __init__(self, scorer: PairScorer, embed: Embedder | None = None, config: dict | None = None):
        self.scorer = scorer.eval()
        self.embed = embed or _default_embed
        self.config = config or {}
        self.losses: list[float] = []  # mean training loss per epoch, for reports and tests

    def predict_proba(self, inputs: list[str], choices: list[list[str]]) -> list[np.ndarray]:
        _validate(inputs, choices, None, None)
        x, c, mask = _encode(self.embed, inputs, choices)
        with torch.no_grad():
            probs = torch.softmax(self.scorer(x, c, mask), dim=-1).numpy().astype(np.float64)
        return [probs[i, :len(ch)] for i, ch in enumerate(choices)]

    def predict(self, inputs: list[str], choices: list[list[str]]) -> list[int]:
        return [int(np.argmax(p)) for p in self.predict_proba(inputs, choices)]

    def to_dict(self) -> dict:
        """JSON-able: sizes, training config, weights as nested lists (the embedder is not stored)."""
        return {"dim": self.scorer.dim, "hidden": self.scorer.hidden, "config": self.config,
                "losses": self.losses,
                "weights": {k: v.tolist() for k, v in self.scorer.state_dict().items()}}

    @classmethod
    def from_dict(cls, d: dict, embed: Embedder | None = None) -> ClassicKDStudent:
        scorer = PairScorer(d["dim"], d["hidden"])
        scorer.load_state_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in d["weights"].items()})
        student = cls(scorer, embed, d.get("config"))
        student.losses = list(d.get("losses", []))
        return student

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path, embed: Embedder | None = None) -> ClassicKDStudent:
        return cls.from_dict(json.loads(Path(path).read_text()), embed)


def train_classic_kd(inputs: list[str], choices: list[list[str]], teacher_probs: list[list[float]],
                     gold: list[int] | None = None, temperature: float = 2.0, alpha: float = 0.9,
                     epochs: int = 100, seed: int = 0, embed: Embedder | None = None, hidden: int = 128,
                     lr: float = 1e-3, batch_size: int = 256, weight_decay: float = 1e-4) -> ClassicKDStudent:
    """Train the classic-KD student on teacher distributions over each item's choices.
    gold: human labels for the hard-label term; None (default) uses the teacher's argmax, so the
    baseline sees exactly what the generative student sees. alpha=1 is pure soft-label KD,
    alpha=0 pure hard-label training."""
    _validate(inputs, choices, teacher_probs, gold)
    if temperature <= 0 or not math.isfinite(temperature):
        raise ValueError(f"classic KD: temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"classic KD: alpha must be in [0, 1], got {alpha}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"classic KD: epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    embed = embed or _default_embed
    x, c, mask = _encode(embed, inputs, choices)
    probs = _pad(teacher_probs, mask.shape[1])
    hard = torch.tensor(gold if gold is not None else [int(np.argmax(p)) for p in teacher_probs])

    torch.manual_seed(seed)  # same seed -> same init and batch order -> same weights (CPU)
    gen = torch.Generator().manual_seed(seed)
    scorer = PairScorer(x.shape[1], hidden)
    opt = torch.optim.Adam(scorer.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=gen)
        total = 0.0
        for start in range(0, len(order), batch_size):
            b = order[start:start + batch_size]
            loss = kd_loss(scorer(x[b], c[b], mask[b]), probs[b], mask[b], hard[b], temperature, alpha)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        losses.append(total / len(order))
    config = {"temperature": temperature, "alpha": alpha, "epochs": epochs, "seed": seed, "lr": lr,
              "batch_size": batch_size, "weight_decay": weight_decay, "used_gold": gold is not None}
    student = ClassicKDStudent(scorer, embed, config)
    student.losses = losses
    return student
