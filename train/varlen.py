"""Document-aware attention for padding-free training: every packed document attends only to itself.

TRL's padding-free collator flattens a batch into one row and passes the documents' boundaries
(`cu_seq_lens_q`). Under sdpa transformers turns that into a (T x T) block mask over the whole
row; here PyTorch's own FlashAttention-2 varlen op (CUDA) takes the boundaries directly and never
builds a mask. Registered with transformers as the attention implementation VARLEN; on CPU a
per-document reference kernel with the same signature stands in (the oracle of `probe_varlen`).
transformers ships flash-attention implementations only through the `flash-attn` /
kernels packages, which the GPU machines here cannot install: this is the part we write ourselves.
"""
from __future__ import annotations

import inspect

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AttentionInterface

try:  # PyTorch's own FlashAttention-2 varlen op (CUDA); imported here, not inside the compiled region
    from torch.nn.attention.varlen import varlen_attn
except ImportError:
    varlen_attn = None
# torch 2.11's varlen_attn has no enable_gqa (2.13 has): there the kv heads are expanded before the call.
VARLEN_GQA = varlen_attn is not None and "enable_gqa" in inspect.signature(varlen_attn).parameters

VARLEN = "distill_varlen"  # our attention implementation, registered below
# Upper bound on a packed document's length (SFTConfig.max_length), passed to the kernel as max_seqlen: a
# constant, so torch.compile never specialises on (and recompiles for) the batch's longest document.
PACKED_MAX_LEN: list[int | None] = [None]


def _segments(q, k, v, cu, window):
    """Per document: (start, end, q, k, v as (H, L, D) with kv heads expanded, causal/window mask)."""
    rep = q.shape[1] // k.shape[1]
    bounds = cu.tolist()
    for s, e in zip(bounds[:-1], bounds[1:]):
        if e > s:
            qs, ks, vs = (x[s:e].transpose(0, 1) for x in (q, k, v))
            i = torch.arange(e - s, device=q.device)
            mask = i[None, :] <= i[:, None]
            if window:
                mask &= (i[:, None] - i[None, :]) < window  # transformers' sliding_window_overlay
            yield s, e, qs, ks.repeat_interleave(rep, 0), vs.repeat_interleave(rep, 0), mask


def reference_varlen(q, k, v, cu, scale, window):
    """Per-document causal (sliding-window) attention, (T, H, D) -> (T, Hq, D): the CPU path and the oracle."""
    return torch.cat([F.scaled_dot_product_attention(qs, ks, vs, attn_mask=m, scale=scale).transpose(0, 1)
                      for _, _, qs, ks, vs, m in _segments(q, k, v, cu, window)])


def reference_varlen_backward(g, q, k, v, cu, scale, window):
    """Gradients of reference_varlen (softmax attention backward written out, kv-head grads summed)."""
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    hkv, d = k.shape[1], q.shape[-1]
    for s, e, qs, ks, vs, m in _segments(q, k, v, cu, window):
        p = torch.softmax((qs @ ks.transpose(1, 2) * scale).masked_fill(~m, float("-inf")), -1)
        gs = g[s:e].transpose(0, 1)
        dp = gs @ vs.transpose(1, 2)
        ds = p * (dp - (dp * p).sum(-1, keepdim=True)) * scale
        dq[s:e] = (ds @ ks).transpose(0, 1)
        dk[s:e] = (ds.transpose(1, 2) @ qs).view(hkv, -1, e - s, d).sum(1).transpose(0, 1)
        dv[s:e] = (p.transpose(1, 2) @ gs).view(hkv, -1, e - s, d).sum(1).transpose(0, 1)
    return dq, dk, dv


# CPU stand-in with the CUDA op's signature: an opaque custom op taking (cu, max_len), so torch.compile sees the
# same graph and the same dynamic shapes on a CPU check as on the GPU.
@torch.library.custom_op("distill::varlen_ref", mutates_args=())
def _varlen_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int,
                scale: float, window: int) -> torch.Tensor:
    return reference_varlen(q, k, v, cu, scale, window)


@torch.library.custom_op("distill::varlen_ref_bwd", mutates_args=())
def _varlen_ref_bwd(g: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor,
                    max_len: int, scale: float, window: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return reference_varlen_backward(g, q, k, v, cu, scale, window)


_varlen_ref.register_fake(lambda q, k, v, cu, max_len, scale, window: torch.empty_like(q))
_varlen_ref_bwd.register_fake(lambda g, q, k, v, *a: (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)))


def _ref_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:4])
    ctx.rest = inputs[4:]


_varlen_ref.register_autograd(
    lambda ctx, g: (*_varlen_ref_bwd(g.contiguous(), *ctx.saved_tensors, *ctx.rest), None, None, None, None),
    setup_context=_ref_setup)


def varlen_kernel(q, k, v, cu, max_len, scale, window):
    """(T, H, D) packed documents -> (T, Hq, D). CUDA: PyTorch's built-in FlashAttention-2 varlen op."""
    if not q.is_cuda:
        return _varlen_ref(q, k, v, cu, max_len, scale if scale is not None else q.shape[-1] ** -0.5, window or 0)
    # Under autocast v comes straight from a Linear (autocast dtype) while RoPE promotes q and k to fp32.
    dtype = v.dtype if v.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
    # FA windows are inclusive: (W - 1, 0) = the token itself and W - 1 before it, as transformers' mask.
    win = (window - 1, 0) if window else (-1, 0)
    gqa = q.shape[1] != k.shape[1]
    if gqa and not VARLEN_GQA:
        k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
    extra = {"enable_gqa": gqa} if VARLEN_GQA else {}
    return varlen_attn(q.to(dtype), k.to(dtype), v.to(dtype), cu, cu, max_len, max_len, scale=scale,
                       window_size=win, **extra)


def varlen_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                             sliding_window=None, softcap=None, **kwargs):
    """transformers attention interface. Padding-free batches (TRL's collator) pass `cu_seq_lens_q`; a padded
    (B, S) batch is taken as B sequences of S: exact for right padding under a causal mask (real tokens never
    see the pads after them), which is what TRL's SFT and DPO collators produce. Not for left-padded generation."""
    if softcap is not None or (dropout and module.training) or not getattr(module, "is_causal", True):
        raise NotImplementedError(f"{VARLEN}: softcap, dropout and non-causal attention are not supported")
    b, hq, s, _ = query.shape
    cu, max_len = kwargs.get("cu_seq_lens_q"), kwargs.get("max_length_q")
    if cu is None or b != 1:
        cu = torch.arange(0, (b + 1) * s, s, dtype=torch.int32, device=query.device)
        max_len = s
    elif PACKED_MAX_LEN[0]:
        max_len = PACKED_MAX_LEN[0]  # >= every document (packing truncates to it); only sizes the kernel grid
    q, k, v = (x.transpose(1, 2).reshape(b * s, x.shape[1], x.shape[3]) for x in (query, key, value))
    if isinstance(max_len, torch.Tensor):
        max_len = int(max_len)
    out = varlen_kernel(q, k, v, cu.to(torch.int32), max_len, scaling, sliding_window)
    return out.view(b, s, hq, out.shape[-1]), None


AttentionInterface.register(VARLEN, varlen_attention_forward)


def probe_varlen(cfg, device: str = "cuda") -> str | None:
    """Check the varlen kernel (fwd + bwd, GQA, window) against the fp32 reference; None = usable."""
    if device == "cuda" and not torch.cuda.is_available():
        return None
    if device == "cuda" and varlen_attn is None:
        return f"torch {torch.__version__} has no torch.nn.attention.varlen"
    try:
        hq, hkv = cfg.num_attention_heads, cfg.num_key_value_heads
        d = getattr(cfg, "head_dim", None) or cfg.hidden_size // hq
        windows = [None] + ([cfg.sliding_window] if "sliding_attention" in (getattr(cfg, "layer_types", None) or [])
                            else [])
        lens = [700, 300, 1024, 24]
        cu = torch.tensor(np.concatenate([[0], np.cumsum(lens)]), dtype=torch.int32, device=device)
        gen = torch.Generator(device=device).manual_seed(0)
        for window in windows:
            # q and k at 2x: peaked attention, so a wrong mask or window shows as an O(1) error
            x = [(torch.randn(sum(lens), h, d, device=device, generator=gen) * c).to(torch.bfloat16).requires_grad_()
                 for h, c in ((hq, 2.0), (hkv, 2.0), (hkv, 1.0))]
            xf = [t.detach().float().requires_grad_() for t in x]
            out = varlen_kernel(*x, cu, max(lens), d ** -0.5, window)
            ref = reference_varlen(*xf, cu, d ** -0.5, window)
            g = torch.randn_like(ref)
            grads = torch.autograd.grad((out.float() * g).sum(), x)
            rgrads = torch.autograd.grad((ref * g).sum(), xf)
            for name, a, r in [("out", out, ref)] + list(zip(("dq", "dk", "dv"), grads, rgrads)):
                err = (a.float() - r).abs().max().item() / max(r.abs().max().item(), 1e-6)
                if not err < 0.1:  # bf16 noise is ~1%; a wrong mask or window is O(1)
                    return f"{name} relative error {err:.3g} (window {window})"
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means: fall back
        return f"{type(exc).__name__}: {exc}"
