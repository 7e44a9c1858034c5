"""Sparse logit KD losses: exactness vs full-vocabulary references, tail bucket, chunking,
gradient accumulation normalisation (TRL #4719), and sampled-vs-top-k bias."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from train.kd_losses import (kd_loss, kd_loss_from_logits, sample_teacher_tokens,
                             sampled_kd_loss)

V, D, N = 50, 16, 7
DT = torch.float64
CASES = [("forward_kl", {}), ("reverse_kl", {}), ("jsd", {"beta": 0.5}), ("jsd", {"beta": 0.2}),
         ("jsd", {"beta": 0.0}), ("jsd", {"beta": 1.0}), ("skew_kl", {"alpha": 0.1}),
         ("skew_kl", {"alpha": 0.0})]


def _ref(log_p, log_q, divergence, beta=0.5, alpha=0.1):
    """Plain-formula divergences between full (or bucketed) distributions, per row."""
    p, q = log_p.exp(), log_q.exp()

    def kl(a, la, lb):
        return (a * (la - lb)).sum(-1)
    # TRL GKD convention: the raw JSD formula is 0 at beta = 0 / 1; TRL uses the KLs there
    if divergence == "forward_kl" or (divergence == "jsd" and beta == 0.0):
        return kl(p, log_p, log_q)
    if divergence == "jsd" and beta == 1.0:
        return kl(q, log_q, log_p)
    if divergence == "reverse_kl":
        return kl(q, log_q, log_p)
    if divergence == "jsd":
        m = (beta * p + (1 - beta) * q).log()
        return beta * kl(p, log_p, m) + (1 - beta) * kl(q, log_q, m)
    return kl(p, log_p, (alpha * p + (1 - alpha) * q).log())


def _setup(n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, D, generator=g, dtype=DT, requires_grad=True)
    w = (torch.randn(V, D, generator=g, dtype=DT) * 0.5).requires_grad_()
    b = (torch.randn(V, generator=g, dtype=DT) * 0.1).requires_grad_()
    t_logits = torch.randn(n, V, generator=g, dtype=DT) * 2
    return h, w, b, t_logits


def _topk(t_logits, k, pad=0, seed=1):
    """Teacher top-k ids/log-probs in shuffled order with `pad` padding columns interleaved."""
    lp_full = t_logits.log_softmax(-1)
    lp, ids = lp_full.topk(k, -1)
    ids = torch.cat([ids, torch.full((ids.shape[0], pad), -1)], -1)
    lp = torch.cat([lp, torch.full((lp.shape[0], pad), float("-inf"), dtype=lp.dtype)], -1)
    perm = torch.randperm(k + pad, generator=torch.Generator().manual_seed(seed))
    return ids[:, perm], lp[:, perm]


def _grads(loss, *ts):
    return torch.autograd.grad(loss, ts)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("divergence,kw", CASES)
def test_full_support_equals_full_vocab_reference(divergence, kw, temperature):
    h, w, b, t_logits = _setup()
    ids, lp = _topk(t_logits, V, pad=3)  # k covers V, plus padding that must be ignored
    loss, n = kd_loss(h, w, ids, lp, lm_head_bias=b, divergence=divergence,
                      temperature=temperature, chunk_size=4, **kw)
    log_q = ((h @ w.T + b) / temperature).log_softmax(-1)  # temperature: student only
    ref = _ref(t_logits.log_softmax(-1), log_q, divergence, **kw).sum()
    assert int(n) == N
    torch.testing.assert_close(loss, ref)
    for g, r in zip(_grads(loss, h, w, b), _grads(ref, h, w, b)):
        torch.testing.assert_close(g, r)
    if divergence in ("forward_kl", "reverse_kl"):  # and against torch.distributions
        pt, qs = Categorical(logits=t_logits), Categorical(logits=log_q)
        kl = kl_divergence(pt, qs) if divergence == "forward_kl" else kl_divergence(qs, pt)
        torch.testing.assert_close(loss, kl.sum())


@pytest.mark.parametrize("divergence,kw", CASES)
def test_tail_bucket_equals_bucketed_reference(divergence, kw):
    h, w, b, t_logits = _setup()
    k = 5
    ids, lp = _topk(t_logits, k, pad=2)
    loss, _ = kd_loss(h, w, ids, lp, lm_head_bias=b, divergence=divergence, **kw)

    def bucket(log_full, top_ids):
        top = log_full.gather(-1, top_ids)
        return torch.cat([top, (1 - top.exp().sum(-1, keepdim=True)).log()], -1)
    top_ids = t_logits.topk(k, -1).indices
    log_p_full, log_q_full = t_logits.log_softmax(-1), (h @ w.T + b).log_softmax(-1)
    ref = _ref(bucket(log_p_full, top_ids), bucket(log_q_full, top_ids), divergence, **kw).sum()
    torch.testing.assert_close(loss, ref)
    for g, r in zip(_grads(loss, h, w, b), _grads(ref, h, w, b)):
        torch.testing.assert_close(g, r)
    if divergence == "forward_kl":  # bucketing only merges outcomes: KL can only shrink
        assert loss < _ref(log_p_full, log_q_full, "forward_kl").sum()


@pytest.mark.parametrize("divergence,kw", CASES[:4] + [("skew_kl", {"alpha": 0.1})])
def test_chunked_equals_unchunked_and_logits_path(divergence, kw):
    h, w, b, t_logits = _setup(n=11)
    ids, lp = _topk(t_logits, 6, pad=1)
    results = []
    for cs in (3, 11):
        loss, n = kd_loss(h, w, ids, lp, lm_head_bias=b, divergence=divergence,
                          chunk_size=cs, **kw)
        results.append((loss, *_grads(loss, h, w, b)))
    for a, r in zip(*results):
        torch.testing.assert_close(a, r)
    logits = h @ w.T + b
    loss_l, _ = kd_loss_from_logits(logits, ids, lp, divergence=divergence, chunk_size=3, **kw)
    torch.testing.assert_close(loss_l, results[0][0])
    for a, r in zip(_grads(loss_l, h, w, b), results[0][1:]):
        torch.testing.assert_close(a, r)


def test_padding_ids_ignored_and_all_padding_row_contributes_nothing():
    h, w, b, t_logits = _setup()
    ids, lp = _topk(t_logits, 5)
    ids_p, lp_p = _topk(t_logits, 5, pad=4, seed=3)
    # padded columns alone: same loss and gradients
    a, _ = kd_loss(h, w, ids, lp, divergence="jsd")
    c, _ = kd_loss(h, w, ids_p, lp_p, divergence="jsd")
    torch.testing.assert_close(a, c)
    # an extra all-padding row: same loss, same token count, exactly zero gradient on it
    h2 = torch.cat([h.detach(), torch.randn(1, D, dtype=DT)]).requires_grad_()
    ids2 = torch.cat([ids_p, torch.full((1, ids_p.shape[1]), -1)])
    lp2 = torch.cat([lp_p, torch.full((1, lp_p.shape[1]), float("-inf"), dtype=DT)])
    for div in ("forward_kl", "reverse_kl", "jsd", "skew_kl"):
        base, n0 = kd_loss(h, w, ids_p, lp_p, divergence=div)
        loss, n1 = kd_loss(h2, w, ids2, lp2, divergence=div, chunk_size=4)
        (gh,) = _grads(loss, h2)
        torch.testing.assert_close(loss, base)
        assert int(n0) == int(n1) == N and torch.all(gh[-1] == 0) and torch.isfinite(gh).all()
    sw = torch.cat([torch.rand(N, 5, dtype=DT), torch.zeros(1, 5, dtype=DT)])
    s_loss, s_n = sampled_kd_loss(h2, w, ids2[:, :5].clamp_min(-1), sw)
    assert int(s_n) == N and torch.all(_grads(s_loss, h2)[0][-1] == 0)


def test_empty_batch_backprops_zero():
    h, w, _, _ = _setup(n=0)
    loss, n = kd_loss(h, w, torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 3, dtype=DT))
    loss.backward()
    assert int(n) == 0 and loss.item() == 0.0 and torch.all(w.grad == 0)


def test_no_full_logits_kept_for_backward():
    """Every chunk is checkpointed: no tensor of N x V elements is saved for backward."""
    h, w, b, t_logits = _setup(n=64)
    ids, lp = _topk(t_logits, 8)
    sizes: list[int] = []

    def pack(t):
        sizes.append(t.numel())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = kd_loss(h, w, ids, lp, lm_head_bias=b, divergence="jsd", chunk_size=8)
    assert max(sizes, default=0) < 64 * V
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):  # the hook has teeth
        (h @ w.T).log_softmax(-1).sum()
    assert max(sizes) >= 64 * V
    loss.backward()
    assert torch.isfinite(w.grad).all()


@pytest.mark.parametrize("divergence", ["forward_kl", "jsd"])
def test_grad_accumulation_matches_large_batch(divergence):
    """One SGD step on a batch of 8 == two micro-batches of 4 with unequal token counts,
    each normalised by the token count of the whole accumulated batch (TRL #4719)."""
    g = torch.Generator().manual_seed(0)
    seq, k = 6, 5
    student = torch.nn.Sequential(torch.nn.Linear(D, D, bias=False), torch.nn.Tanh(),
                                  torch.nn.Linear(D, V)).double()
    x = torch.randn(8, seq, D, generator=g, dtype=DT)
    mask = torch.zeros(8, seq, dtype=torch.bool)
    mask[:4] = True         # first micro-batch: 24 target tokens
    mask[4:, -1] = True     # second micro-batch: 4 target tokens
    t_logits = torch.randn(8, seq, V, generator=g, dtype=DT) * 2
    lp_all, ids_all = t_logits.log_softmax(-1).topk(k, -1)

    def micro(model, rows):
        m = mask[rows]
        feats = model[1](model[0](x[rows][m]))  # gathered target positions only
        return kd_loss(feats, model[2].weight, ids_all[rows][m], lp_all[rows][m],
                       lm_head_bias=model[2].bias, divergence=divergence, chunk_size=5)

    def step(model, batches, norm):
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        opt.zero_grad()
        for rows in batches:
            loss_sum, n = micro(model, rows)
            (loss_sum / norm(n)).backward()
        opt.step()
        return [p.detach().clone() for p in model.parameters()]

    total = int(mask.sum())
    big = step(copy.deepcopy(student), [slice(0, 8)], lambda n: total)
    acc = step(copy.deepcopy(student), [slice(0, 4), slice(4, 8)], lambda n: total)
    naive = step(copy.deepcopy(student), [slice(0, 4), slice(4, 8)], lambda n: 2 * n)
    for a, c in zip(big, acc):
        torch.testing.assert_close(a, c)
    init = [p.detach() for p in student.parameters()]
    assert (big[-2] - init[-2]).abs().max() > 1e-3  # the step actually moved the weights
    assert max((a - c).abs().max() for a, c in zip(big, naive)) > 1e-3  # the trap is real


def test_sample_teacher_tokens_format():
    t_logits = torch.randn(5, V, dtype=DT)
    ids, wts = sample_teacher_tokens(t_logits, 12, torch.Generator().manual_seed(0))
    assert ids.shape == wts.shape == (5, 12)
    torch.testing.assert_close(wts.sum(-1), torch.ones(5, dtype=DT))
    assert torch.all((ids == -1) == (wts == 0))
    for row in ids:
        real = row[row >= 0]
        assert len(real.unique()) == len(real)


def test_sampled_gradient_unbiased_topk_biased():
    h, w, b, t_logits = _setup(n=4)
    t_logits = t_logits * 0.6  # a spread teacher, so top-k truncation drops real mass
    log_p = t_logits.log_softmax(-1)
    full = _ref(log_p, (h @ w.T + b).log_softmax(-1), "forward_kl").sum()
    g_full = torch.cat([g.flatten() for g in _grads(full, h, w, b)])

    seeds, s = 400, 8
    g_sum, loss_sum = torch.zeros_like(g_full), 0.0
    for seed in range(seeds):
        ids, wts = sample_teacher_tokens(t_logits, s, torch.Generator().manual_seed(seed))
        loss, _ = sampled_kd_loss(h, w, ids, wts, lm_head_bias=b, chunk_size=3)
        g_sum += torch.cat([g.flatten() for g in _grads(loss, h, w, b)])
        loss_sum += loss.detach().item()
    err_sampled = ((g_sum / seeds - g_full).norm() / g_full.norm()).item()
    # E[loss] = cross-entropy = forward KL + teacher entropy (a constant without gradient)
    entropy = -(log_p.exp() * log_p).sum()
    assert abs(loss_sum / seeds - (full + entropy).item()) < 0.05 * (full + entropy).item()

    lp_k, ids_k = log_p.topk(s, -1)  # same storage budget, plain top-k renormalised
    loss_k, _ = kd_loss(h, w, ids_k, lp_k - lp_k.logsumexp(-1, keepdim=True), lm_head_bias=b)
    g_k = torch.cat([g.flatten() for g in _grads(loss_k, h, w, b)])
    err_topk = ((g_k - g_full).norm() / g_full.norm()).item()
    assert err_sampled < 0.1, err_sampled
    assert err_topk > 3 * err_sampled and err_topk > 0.2, (err_topk, err_sampled)
