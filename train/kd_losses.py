"""Offline logit distillation losses over sparse teacher distributions (top-k or sampled).

The teacher pass stores, per target token (keyed by sample id and position, never by step),
either its top-k `(ids, log-probs)` or ids sampled from its distribution with weights. These
losses consume them against a student without ever building the full (N, V) student logits:
positions are processed `chunk_size` rows at a time, each chunk's logits are formed, used and
dropped, and every chunk is wrapped in `torch.utils.checkpoint` so the backward recomputes them
one chunk at a time instead of keeping all chunks alive.

Top-k divergences (`kd_loss`): everything outside the teacher's top-k is one extra "tail"
bucket, teacher mass `1 - sum(exp(teacher_logprobs))`, student mass the softmax mass outside
the top-k ids (a logsumexp over the masked logits, so no `log(1 - x)` cancellation). Each
divergence is then the exact divergence between these (k+1)-bucket distributions; when k
covers the vocabulary the tail is empty and it equals the full-vocabulary divergence.
Forward KL on buckets lower-bounds the full forward KL (data processing inequality) and its
student-side tail term pushes the right total mass outside the top-k, but says nothing about
how the tail is spread. Top-k caching is still biased (Anshumann et al. 2025, "Sparse Logit
Sampling"); `sampled_kd_loss` with `sample_teacher_tokens` is the unbiased alternative.

Reduction (the TRL #4719 trap): losses return `(loss_sum, n_tokens)`. Under gradient
accumulation divide every micro-batch's `loss_sum` by the number of target tokens of the
*whole* accumulated batch (all-reduced across ranks too), never by the micro-batch's own
count, otherwise micro-batches with fewer tokens get more weight than in the large batch.

Temperature applies to the student only: stored teacher log-probs are at the temperature the
teacher pass used (normally 1). Re-tempering a truncated teacher exactly is impossible: the
normaliser of p**(1/T) needs the shape of the tail, of which only the total mass is stored.
If a softened teacher is wanted, the teacher pass must write log-probs at that temperature.
No T**2 gradient rescaling is applied; the caller can multiply if it wants Hinton's scaling.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable, Literal

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

Divergence = Literal["forward_kl", "reverse_kl", "jsd", "skew_kl"]
DIVERGENCES: tuple[str, ...] = ("forward_kl", "reverse_kl", "jsd", "skew_kl")
Reduction = Literal["sum", "mean"]
# Teacher tail mass is floored at 1e-30 (log -69): a top-k that rounds to mass >= 1 would give
# log(0) and an infinite reverse KL / JSD on the tail; 1e-30 changes forward KL negligibly.
_LOG_TAIL_FLOOR_MASS = 1e-30

RowLoss = Callable[[Tensor, Tensor, Tensor], Tensor]  # (logits, ids, aux) -> per-row loss


def _kl(log_a: Tensor, log_b: Tensor, mask: Tensor) -> Tensor:
    """sum_i a_i (log a_i - log b_i) over masked buckets; masked entries hold finite dummies."""
    return torch.where(mask, log_a.exp() * (log_a - log_b), 0.0).sum(-1)


def _log_mix(log_p: Tensor, log_q: Tensor, c: float) -> Tensor:
    """log(c p + (1 - c) q) computed stably in log space, 0 < c < 1."""
    return torch.logaddexp(log_p + math.log(c), log_q + math.log1p(-c))


def _buckets(logits: Tensor, ids: Tensor, teacher_logprobs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(log p, log q, mask) over the k top-k buckets plus the tail bucket, each (c, k+1)."""
    c, vocab = logits.shape
    valid = ids >= 0
    lse = logits.logsumexp(-1, keepdim=True)
    log_q_top = logits.gather(-1, ids.clamp_min(0)) - lse
    # Padded ids go to a spare column V; scattering them onto a real id (e.g. 0) would race
    # with a valid write of that same id.
    in_top = torch.zeros(c, vocab + 1, dtype=torch.bool, device=logits.device)
    in_top = in_top.scatter_(-1, torch.where(valid, ids, vocab), True)[:, :vocab]
    has_tail = ~in_top.all(-1)
    # Only mask rows that have a tail: masking a full row would give logsumexp(-inf) = -inf
    # and NaN gradients even though the result is discarded.
    rest = logits.masked_fill(in_top & has_tail[:, None], float("-inf"))
    log_q_tail = rest.logsumexp(-1) - lse.squeeze(-1)

    lp = teacher_logprobs.detach().to(logits.dtype)  # the teacher is a constant target
    lse_p = torch.where(valid, lp, float("-inf")).logsumexp(-1)
    log_p_tail = (-torch.expm1(lse_p)).clamp_min(_LOG_TAIL_FLOOR_MASS).log()

    log_p = torch.cat([torch.where(valid, lp, 0.0), log_p_tail[:, None]], -1)
    log_q = torch.cat([log_q_top, torch.where(has_tail, log_q_tail, 0.0)[:, None]], -1)
    mask = torch.cat([valid, has_tail[:, None]], -1)
    return log_p, log_q, mask


def _divergence_rows(logits: Tensor, ids: Tensor, teacher_logprobs: Tensor, *,
                     divergence: str, beta: float, alpha: float) -> Tensor:
    log_p, log_q, mask = _buckets(logits, ids, teacher_logprobs)
    # beta = 0 / 1 follow TRL's GKD (forward / reverse KL); the raw JSD formula is 0 there.
    if divergence == "forward_kl" or (divergence == "jsd" and beta == 0.0) \
            or (divergence == "skew_kl" and alpha == 0.0):
        return _kl(log_p, log_q, mask)
    if divergence == "reverse_kl" or (divergence == "jsd" and beta == 1.0):
        return _kl(log_q, log_p, mask)
    if divergence == "jsd":  # TRL GKD's generalised JSD: m = beta p + (1 - beta) q
        log_m = _log_mix(log_p, log_q, beta)
        return beta * _kl(log_p, log_m, mask) + (1 - beta) * _kl(log_q, log_m, mask)
    # skew forward KL (DistiLLM): KL(p || alpha p + (1 - alpha) q)
    return _kl(log_p, _log_mix(log_p, log_q, alpha), mask)


def _sampled_ce_rows(logits: Tensor, ids: Tensor, weights: Tensor) -> Tensor:
    log_q = logits.gather(-1, ids.clamp_min(0)) - logits.logsumexp(-1, keepdim=True)
    return -torch.where(ids >= 0, weights.detach().to(logits.dtype) * log_q, 0.0).sum(-1)


def _chunk_sum(x: Tensor, weight: Tensor | None, bias: Tensor | None, ids: Tensor, aux: Tensor,
               temperature: float, row_loss: RowLoss) -> Tensor:
    # Matmul in the model's dtype (no float32 copy of W per chunk), then upcast the logits:
    # log-softmax and the divergences need float32 at least (float64 stays float64).
    logits = x if weight is None else x @ weight.T
    if bias is not None:
        logits = logits + bias
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
    rows = row_loss(logits, ids, aux)
    # An all-padding row is no target: where() (not a multiply) keeps it at exactly zero.
    return torch.where((ids >= 0).any(-1), rows, 0.0).sum()


def _chunked(x: Tensor, weight: Tensor | None, bias: Tensor | None, ids: Tensor, aux: Tensor,
             temperature: float, chunk_size: int, reduction: Reduction,
             row_loss: RowLoss) -> tuple[Tensor, Tensor]:
    if x.dim() != 2 or ids.dim() != 2 or ids.shape != aux.shape or ids.shape[0] != x.shape[0]:
        raise ValueError(f"expected x (N, d|V), ids/aux (N, k); got {tuple(x.shape)}, "
                         f"{tuple(ids.shape)}, {tuple(aux.shape)}")
    if chunk_size < 1 or temperature <= 0:
        raise ValueError("chunk_size must be >= 1 and temperature > 0")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"unknown reduction {reduction!r}: use 'sum' or 'mean'")
    ids = ids.long()  # the store keeps int32 ids; gather/scatter need int64
    n = x.shape[0]
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias))
    parts = []
    for s in range(0, max(n, 1), chunk_size):  # at least one chunk: empty batches backprop 0
        args = (x[s:s + chunk_size], weight, bias, ids[s:s + chunk_size],
                aux[s:s + chunk_size], temperature, row_loss)
        parts.append(checkpoint(_chunk_sum, *args, use_reentrant=False) if needs_grad
                     else _chunk_sum(*args))
    loss_sum = torch.stack(parts).sum()
    n_tokens = (ids >= 0).any(-1).sum()  # a tensor: all-reduce it under DDP, no host sync
    if reduction == "mean":
        return loss_sum / n_tokens.clamp_min(1), n_tokens
    return loss_sum, n_tokens


def _divergence_fn(divergence: str, beta: float, alpha: float) -> RowLoss:
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}: one of {DIVERGENCES}")
    if not 0.0 <= beta <= 1.0 or not 0.0 <= alpha < 1.0:
        raise ValueError("need 0 <= beta <= 1 and 0 <= alpha < 1")
    return partial(_divergence_rows, divergence=divergence, beta=beta, alpha=alpha)


def kd_loss(hidden: Tensor, lm_head_weight: Tensor, teacher_ids: Tensor,
            teacher_logprobs: Tensor, *, lm_head_bias: Tensor | None = None,
            divergence: Divergence = "forward_kl", beta: float = 0.5, alpha: float = 0.1,
            temperature: float = 1.0, chunk_size: int = 1024,
            reduction: Reduction = "sum") -> tuple[Tensor, Tensor]:
    """Top-k KD loss from student hidden states, logits built chunk by chunk.

    hidden (N, d): student final hidden states at the N target positions (already gathered);
    lm_head_weight (V, d), lm_head_bias (V,) or None. teacher_ids (N, k) long, unique per row,
    -1 = padding; teacher_logprobs (N, k): teacher log-probs over its full vocabulary for
    those ids (padding: any value, e.g. -inf). `beta` is the JSD mixing weight (0: forward
    KL, 1: reverse KL, 0.5: symmetric), `alpha` the skew of `skew_kl`.
    Returns (loss, n_tokens): loss is the sum over positions ("sum") or that sum divided by
    n_tokens ("mean"); n_tokens counts rows with at least one teacher id.
    """
    return _chunked(hidden, lm_head_weight, lm_head_bias, teacher_ids, teacher_logprobs,
                    temperature, chunk_size, reduction, _divergence_fn(divergence, beta, alpha))


def kd_loss_from_logits(logits: Tensor, teacher_ids: Tensor, teacher_logprobs: Tensor, *,
                        divergence: Divergence = "forward_kl", beta: float = 0.5,
                        alpha: float = 0.1, temperature: float = 1.0, chunk_size: int = 1024,
                        reduction: Reduction = "sum") -> tuple[Tensor, Tensor]:
    """As `kd_loss`, for student logits (N, V) that already exist (e.g. in bf16): only the
    float32 upcast, log-softmax and divergence intermediates are chunked and checkpointed."""
    return _chunked(logits, None, None, teacher_ids, teacher_logprobs, temperature,
                    chunk_size, reduction, _divergence_fn(divergence, beta, alpha))


def sampled_kd_loss(hidden: Tensor, lm_head_weight: Tensor, sample_ids: Tensor,
                    sample_weights: Tensor, *, lm_head_bias: Tensor | None = None,
                    temperature: float = 1.0, chunk_size: int = 1024,
                    reduction: Reduction = "sum") -> tuple[Tensor, Tensor]:
    """Importance-sampled ("random sampling") KD: per row -sum_j w_j log q_S(t_j).

    With (sample_ids, sample_weights) from `sample_teacher_tokens` (tokens drawn from p_T
    with replacement, w = count / num_samples), E[loss] = H(p_T, q_S) = KL(p_T || q_S) +
    H(p_T): an unbiased estimate of forward KL up to the teacher entropy, a constant with no
    gradient, so the gradient is an unbiased estimate of the full forward-KL gradient.
    Ids of -1 are padding. Returns (loss, n_tokens) as `kd_loss`.
    """
    return _chunked(hidden, lm_head_weight, lm_head_bias, sample_ids, sample_weights,
                    temperature, chunk_size, reduction, _sampled_ce_rows)


@torch.no_grad()
def sample_teacher_tokens(teacher_logits: Tensor, num_samples: int,
                          generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Draw `num_samples` tokens per row from softmax(teacher_logits) (N, V), with replacement.

    Returns (ids, weights), each (N, min(num_samples, V)): the distinct drawn ids (most drawn
    first, -1 padding) and count / num_samples (0 on padding), the storage format of the
    top-k pass. Storing counts rather than the teacher's probabilities is what makes the
    estimate unbiased: E[weight of token t] = p_T(t).
    """
    if num_samples < 1:
        raise ValueError("num_samples must be >= 1")
    probs = torch.softmax(teacher_logits.to(torch.promote_types(teacher_logits.dtype,
                                                                torch.float32)), -1)
    draws = torch.multinomial(probs, num_samples, replacement=True, generator=generator)
    counts = torch.zeros_like(probs).scatter_add_(-1, draws, torch.ones(
        draws.shape, dtype=probs.dtype, device=probs.device))
    weights, ids = counts.topk(min(num_samples, probs.shape[-1]), -1)
    return ids.masked_fill(weights == 0, -1), weights / num_samples
