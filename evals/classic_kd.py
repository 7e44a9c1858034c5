"""Classic knowledge-distillation baseline for multiple-choice / classification tasks.

A small head over frozen sentence embeddings (MiniLM by default) is trained on the teachers'
soft labels with Hinton's temperature KD, so the report can compare the generative student
against the cheapest possible student fed the same teacher signal.

One model covers fixed label sets and per-item choices: each (input, choice) pair is scored
from its cosine <e_x, e_c> plus linear and small-MLP read-outs of [e_x*e_c, |e_x-e_c|, e_c]
(see PairScorer), and the scores are soft-maxed over the item's own choices (padded + masked,
so items with 2, 3 or 5 choices share a batch). The number of epochs is picked on held-out
train items (early stopping), then the head is retrained on all of them.

Why not a plain MLP over [e_x, e_c, e_x*e_c, |e_x-e_c|] trained to the end (the first version):
with ~200 train items and per-item option texts (PIQA) it memorised the train options and
the teacher's answers and transferred nothing: on a 2-way task whose right option is the one
naming what the input names, with unseen options at test, it reached 0.99 train but 0.43-0.61
held-out depending on the seed (below chance for some), where the cosine alone scores 1.0.
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
COS_INIT = 10.0  # initial weight of <x, c>: MiniLM cosines of two options differ by ~0.1 -> logit gap ~1
VAL_SHARE = 0.2  # share of train items held out to pick the number of epochs (early stopping)
FORMAT = 2  # to_dict layout; 1 (unversioned) was the MLP over [x, c, x*c, |x-c|]
MIN_VAL = 10  # fewer held-out items than this: no early stopping, train for all epochs


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
    """logit(x, c) = w_cos * <x, c> + linear(f) + MLP(f), f = [x*c, |x-c|, c].

    The input alone is dropped: it is the same for every choice of an item, so the softmax over
    the item's choices cancels it. <x, c> is the cosine for unit-norm embeddings; w_cos starts at
    COS_INIT and the linear and MLP read-outs at 0, so the untrained head already ranks choices
    by how well they match the input (the right prior for per-item choices such as PIQA's) and
    training moves it wherever the teacher points, the opposite way included.
    hidden=0 gives the purely linear head."""

    def __init__(self, dim: int, hidden: int = 32):
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.w_cos = nn.Parameter(torch.tensor(COS_INIT))
        self.linear = nn.Linear(3 * dim, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.mlp = nn.Sequential(nn.Linear(3 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 1)) if hidden else None
        if self.mlp is not None:
            nn.init.zeros_(self.mlp[2].weight)
            nn.init.zeros_(self.mlp[2].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1).expand_as(c)
        f = torch.cat([x * c, (x - c).abs(), c], dim=-1)
        logits = self.w_cos * (x * c).sum(-1) + self.linear(f).squeeze(-1)
        if self.mlp is not None:
            logits = logits + self.mlp(f).squeeze(-1)
        return logits.masked_fill(~mask, MASKED)


def hinton_kd_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, mask: torch.Tensor,
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
        return {"format": FORMAT, "dim": self.scorer.dim, "hidden": self.scorer.hidden, "config": self.config,
                "losses": self.losses,
                "weights": {k: v.tolist() for k, v in self.scorer.state_dict().items()}}

    @classmethod
    def from_dict(cls, d: dict, embed: Embedder | None = None) -> ClassicKDStudent:
        if d.get("format") != FORMAT:
            raise ValueError(f"classic KD: saved head has format {d.get('format')}, this version reads {FORMAT} "
                             "(the head changed: retrain it)")
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


def _fit(x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor, probs: torch.Tensor, hard: torch.Tensor,
         epochs: int, seed: int, hidden: int, lr: float, batch_size: int, weight_decay: float,
         temperature: float, alpha: float, val: tuple[torch.Tensor, ...] | None = None
         ) -> tuple[PairScorer, list[float], list[float]]:
    """Train a fresh scorer for `epochs`; returns it, the mean train loss per epoch and, when `val`
    (x, c, mask, probs, hard) is given, the held-out KD loss before training and after each epoch."""
    torch.manual_seed(seed)  # same seed -> same init and batch order -> same weights (CPU)
    gen = torch.Generator().manual_seed(seed)
    scorer = PairScorer(x.shape[1], hidden)
    opt = torch.optim.Adam(scorer.parameters(), lr=lr, weight_decay=weight_decay)

    def val_loss() -> float:
        with torch.no_grad():
            return hinton_kd_loss(scorer(*val[:3]), val[3], val[2], val[4], temperature, alpha).item()

    losses, val_losses = [], [val_loss()] if val is not None else []
    for _ in range(epochs):
        scorer.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for start in range(0, len(order), batch_size):
            b = order[start:start + batch_size]
            loss = hinton_kd_loss(scorer(x[b], c[b], mask[b]), probs[b], mask[b], hard[b], temperature, alpha)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        losses.append(total / len(order))
        if val is not None:
            val_losses.append(val_loss())
    return scorer, losses, val_losses


def train_classic_kd(inputs: list[str], choices: list[list[str]], teacher_probs: list[list[float]],
                     gold: list[int] | None = None, temperature: float = 2.0, alpha: float = 0.9,
                     epochs: int = 60, seed: int = 0, embed: Embedder | None = None, hidden: int = 32,
                     lr: float = 3e-3, batch_size: int = 32, weight_decay: float = 1e-4,
                     early_stopping: bool = True) -> ClassicKDStudent:
    """Train the classic-KD student on teacher distributions over each item's choices.
    gold: human labels for the hard-label term; None (default) uses the teacher's argmax, so the
    baseline sees exactly what the generative student sees. alpha=1 is pure soft-label KD,
    alpha=0 pure hard-label training.

    early_stopping: hold out VAL_SHARE of the items (at least MIN_VAL), pick the epoch count with
    the lowest held-out KD loss (0 = keep the cosine-matching init), then retrain on every item for
    that many epochs. A few hundred items are far fewer than the head's weights: trained to the
    end it memorises the teacher's noise on the train items and loses what transfers."""
    _validate(inputs, choices, teacher_probs, gold)
    if temperature <= 0 or not math.isfinite(temperature):
        raise ValueError(f"classic KD: temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"classic KD: alpha must be in [0, 1], got {alpha}")
    if epochs < 1 or batch_size < 1 or hidden < 0:
        raise ValueError(f"classic KD: epochs and batch_size must be >= 1 and hidden >= 0, "
                         f"got {epochs}, {batch_size}, {hidden}")
    embed = embed or _default_embed
    x, c, mask = _encode(embed, inputs, choices)
    probs = _pad(teacher_probs, mask.shape[1])
    hard = torch.tensor(gold if gold is not None else [int(np.argmax(p)) for p in teacher_probs])
    hp = dict(seed=seed, hidden=hidden, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
              temperature=temperature, alpha=alpha)

    n_val = int(round(VAL_SHARE * len(inputs)))
    chosen, val_losses = epochs, []
    if early_stopping and n_val >= MIN_VAL:
        perm = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(seed + 1))
        va, tr = perm[:n_val], perm[n_val:]
        _, _, val_losses = _fit(x[tr], c[tr], mask[tr], probs[tr], hard[tr], epochs, **hp,
                                val=(x[va], c[va], mask[va], probs[va], hard[va]))
        chosen = int(np.argmin(val_losses))  # first minimum: ties go to fewer epochs
    scorer, losses, _ = _fit(x, c, mask, probs, hard, chosen, **hp)
    config = {"temperature": temperature, "alpha": alpha, "epochs": epochs, "epochs_used": chosen, "seed": seed,
              "lr": lr, "batch_size": batch_size, "weight_decay": weight_decay, "used_gold": gold is not None,
              "early_stopping": bool(val_losses), "val_items": n_val if val_losses else 0,
              "val_losses": val_losses}
    student = ClassicKDStudent(scorer, embed, config)
    student.losses = losses
    return student
