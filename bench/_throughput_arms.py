"""Helpers of bench/train_throughput.py: models, varlen attention, synthetic data, one timed TRL run.

Nothing here downloads anything: the models are random-init from configs written below, the
tokenizer is clients.tiny's in-memory BPE (it only supplies pad/eos ids and tokenizes the DPO and
on-policy text; SFT data is pre-tokenized ids over the model's own vocabulary).
"""
from __future__ import annotations

import gc
import inspect
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers import (
    AttentionInterface,
    AutoModelForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    PrinterCallback,
    TrainerCallback,
)

try:  # PyTorch's own FlashAttention-2 varlen op (CUDA); imported here, not inside the compiled region
    from torch.nn.attention.varlen import varlen_attn
except ImportError:
    varlen_attn = None
# torch 2.11's varlen_attn has no enable_gqa (2.13 has): there the kv heads are expanded before the call.
VARLEN_GQA = varlen_attn is not None and "enable_gqa" in inspect.signature(varlen_attn).parameters

VARLEN = "bench_varlen"  # our attention implementation, registered below
# Upper bound on a packed document's length (SFTConfig.max_length), passed to the kernel as max_seqlen: a
# constant, so torch.compile never specialises on (and recompiles for) the batch's longest document.
PACKED_MAX_LEN: list[int | None] = [None]


# ---------------------------------------------------------------- models
def model_config(name: str, smoke: bool):
    """The real architectures (random init); `smoke` keeps their shape features but makes them tiny."""
    if name == "smollm2":  # HuggingFaceTB/SmolLM2-135M
        size = dict(vocab_size=2048, hidden_size=96, intermediate_size=192, num_hidden_layers=2,
                    num_attention_heads=6, num_key_value_heads=2) if smoke else \
            dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                 num_attention_heads=9, num_key_value_heads=3)
        return LlamaConfig(**size, max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=True,
                           rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                           bos_token_id=1, eos_token_id=2, pad_token_id=3)
    if name == "gemma3":  # google/gemma-3-270m: 5 sliding-window layers to 1 global layer
        size = dict(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                    num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=64,
                    query_pre_attn_scalar=32) if smoke else \
            dict(vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                 num_attention_heads=4, num_key_value_heads=1, head_dim=256, sliding_window=512,
                 query_pre_attn_scalar=256)
        n = size["num_hidden_layers"]
        return Gemma3TextConfig(**size, layer_types=[("full" if (i + 1) % 6 == 0 else "sliding") + "_attention"
                                                     for i in range(n)],
                                max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=True,
                                rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                                 "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
                                bos_token_id=1, eos_token_id=2, pad_token_id=3)
    raise ValueError(f"unknown model {name}")


def build_model(name: str, smoke: bool, attn: str, seed: int):
    """Same seed, same weights: every arm starts from the identical fp32 initialisation."""
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(model_config(name, smoke), attn_implementation=attn,
                                            dtype=torch.float32)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())  # tied embeddings counted once (= the LM head matmul)


def compile_layers(model) -> None:
    """Regional torch.compile of the decoder layers (norms, RoPE, MLP fused); shapes vary per batch."""
    for attr in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, attr):
            setattr(torch._dynamo.config, attr, 64)
    for layer in model.model.layers:
        layer.compile()


# ---------------------------------------------------------------- varlen attention
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
@torch.library.custom_op("bench::varlen_ref", mutates_args=())
def _varlen_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int,
                scale: float, window: int) -> torch.Tensor:
    return reference_varlen(q, k, v, cu, scale, window)


@torch.library.custom_op("bench::varlen_ref_bwd", mutates_args=())
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


# ---------------------------------------------------------------- synthetic data
@dataclass
class Scale:
    max_length: int
    sft_batch: int  # packed rows of max_length per step, plain TRL
    doc_median: int
    doc_min: int
    dpo_batch: int
    dpo_prompt_median: int
    dpo_completion_median: int
    onpolicy_batch: int
    prompt_median: int
    max_new_tokens: int


GPU_SCALE = Scale(1024, 16, 300, 50, 8, 150, 200, 16, 100, 128)
SMOKE_SCALE = Scale(256, 4, 80, 20, 2, 40, 40, 2, 16, 8)


def _lengths(rng, median, lo, hi, n):
    return np.clip(np.rint(rng.lognormal(np.log(median), 0.8, n)), lo, hi).astype(int)


def sft_docs(total_tokens: int, vocab: int, scale: Scale, eos: int, seed: int) -> list[list[int]]:
    """Documents from a random sparse Markov chain (8 successors per token, Zipf weights) over up to 8k ids:
    learnable, so the loss curve falls from ln V towards ~1.7 nats. Lognormal lengths in [doc_min, max_length]."""
    rng = np.random.default_rng(seed)
    v = min(8192, vocab - 16)
    succ = rng.integers(0, v, size=(v, 8))
    cdf = np.cumsum(1 / np.arange(1, 9))
    cdf /= cdf[-1]
    lengths = []
    while sum(lengths) < total_tokens:
        lengths += _lengths(rng, scale.doc_median, scale.doc_min, scale.max_length, 256).tolist()
    ids = np.empty((len(lengths), max(lengths)), dtype=np.int64)
    ids[:, 0] = rng.integers(0, v, len(lengths))
    for t in range(1, ids.shape[1]):
        ids[:, t] = succ[ids[:, t - 1], np.searchsorted(cdf, rng.random(len(lengths)))]
    return [(ids[i, :n] + 16).tolist()[:-1] + [eos] for i, n in enumerate(lengths)]


def _words(tokenizer) -> list[str]:
    """Whole-word tokens of the tiny BPE ("Ġthe" -> " the"): text built from them re-tokenizes 1:1."""
    words = [t for t in tokenizer.get_vocab() if t.startswith("Ġ") and t[1:].isalpha()]
    return sorted(w.replace("Ġ", " ") for w in words)


def _text(rng, words, n) -> str:
    return "".join(rng.choice(words, n))


def dpo_pairs(n: int, tokenizer, scale: Scale, seed: int) -> dict[str, list[str]]:
    rng, words = np.random.default_rng(seed), _words(tokenizer)
    hi = scale.max_length // 2
    rows = {"prompt": [], "chosen": [], "rejected": []}
    for p, c, r in zip(_lengths(rng, scale.dpo_prompt_median, 8, hi, n),
                       _lengths(rng, scale.dpo_completion_median, 4, hi, n),
                       _lengths(rng, scale.dpo_completion_median, 4, hi, n)):
        rows["prompt"].append(_text(rng, words, p))
        rows["chosen"].append(_text(rng, words, c))
        rows["rejected"].append(_text(rng, words, r))
    return rows


def prompts(n: int, tokenizer, scale: Scale, seed: int) -> dict[str, list[str]]:
    rng, words = np.random.default_rng(seed), _words(tokenizer)
    lens = _lengths(rng, scale.prompt_median, 4, 4 * scale.prompt_median, n)
    return {"prompt": [_text(rng, words, m) for m in lens]}


# ---------------------------------------------------------------- one timed run
@dataclass
class Arm:
    name: str
    attn: str = "sdpa"
    checkpointing: bool | None = None  # None: TRL's default (on)
    compile: bool = False
    liger: bool = False
    tf32: bool = False
    batch: int | None = None  # None: the task's plain batch


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Clock(TrainerCallback):
    """Wall time at the start and at every optimizer step's end, the device synchronised."""

    def __init__(self):
        self.begin, self.marks = 0.0, []

    def on_train_begin(self, args, state, control, **kwargs):
        sync()
        self.begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        sync()
        self.marks.append(time.perf_counter())


def _count(inputs):
    """Trained (non-pad) tokens of a collated batch; None where the batch is raw rows (on-policy)."""
    if not isinstance(inputs, dict):
        return None
    if "attention_mask" in inputs:
        return inputs["attention_mask"].sum()  # a tensor: read at the end, no sync per step
    if "position_ids" in inputs:  # padding-free: one row of real tokens
        return inputs["position_ids"].shape[-1]
    return None


def traced(cls):
    """`cls` recording each step's loss and token count without forcing a device sync."""

    class Traced(cls):
        def training_step(self, model, inputs, num_items_in_batch=None):
            self.bench_tokens.append(_count(inputs))
            loss = super().training_step(model, inputs, num_items_in_batch)
            self.bench_losses.append(loss.detach())
            return loss

    Traced.__name__ = cls.__name__
    return Traced


def train_args(arm: Arm, batch: int, steps: int, lr: float, seed: int, out_dir: str) -> dict:
    """TrainingArguments common to every trainer; plain TRL keeps TRL's defaults (checkpointing on)."""
    kw = dict(output_dir=out_dir, max_steps=steps, per_device_train_batch_size=batch, learning_rate=lr,
              lr_scheduler_type="constant_with_warmup", warmup_steps=min(5, steps), seed=seed,
              bf16=torch.cuda.is_available(), logging_steps=10, save_strategy="no", report_to="none",
              disable_tqdm=True, dataloader_num_workers=0, use_liger_kernel=arm.liger)
    if arm.checkpointing is not None:
        kw["activation_checkpointing"] = arm.checkpointing
    return kw


def run_arm(task: str, arm: Arm, model_name: str, smoke: bool, data: dict, tokenizer, scale: Scale,
            warmup: int, steps: int, lr: float, seed: int) -> dict:
    """Train one arm for warmup + steps optimizer steps; time the last `steps`."""
    from datasets import Dataset

    torch.set_float32_matmul_precision("high" if arm.tf32 else "highest")
    cuda = torch.cuda.is_available()
    torch._dynamo.reset()  # no compiled graph or recompile budget carries over between arms
    if cuda:
        torch.cuda.empty_cache()
    PACKED_MAX_LEN[0] = scale.max_length if task == "sft" else None
    model = build_model(model_name, smoke, arm.attn, seed)
    params = n_params(model)
    dataset = Dataset.from_dict(data)
    with tempfile.TemporaryDirectory() as out_dir:
        if task == "sft":
            from trl import SFTConfig, SFTTrainer

            batch = arm.batch or scale.sft_batch
            # packing_strategy "bfd" (TRL's default) makes TRL padding-free in both arms: one flattened row with
            # position_ids and cu_seq_lens. Under sdpa, transformers turns that into a (T x T) block mask.
            cfg = SFTConfig(**train_args(arm, batch, warmup + steps, lr, seed, out_dir), packing=True,
                            packing_strategy="bfd", max_length=scale.max_length)
            if arm.compile:
                compile_layers(model)
            trainer = traced(SFTTrainer)(model=model, args=cfg, train_dataset=dataset, processing_class=tokenizer)
        elif task == "dpo":
            from trl import DPOConfig, DPOTrainer

            batch = arm.batch or scale.dpo_batch
            ref = build_model(model_name, smoke, arm.attn, seed).eval().requires_grad_(False)
            if arm.compile:
                compile_layers(model)
                compile_layers(ref)
            cfg = DPOConfig(**train_args(arm, batch, warmup + steps, lr, seed, out_dir), max_length=scale.max_length)
            trainer = traced(DPOTrainer)(model=model, ref_model=ref, args=cfg, train_dataset=dataset,
                                         processing_class=tokenizer)
        else:
            from trl import DistillationConfig, DistillationTrainer

            batch = arm.batch or scale.onpolicy_batch
            teacher = build_model(model_name, smoke, arm.attn, seed + 1).eval().requires_grad_(False)
            base = DistillationTrainer
            if arm.compile:
                compile_layers(model)
                compile_layers(teacher)

                class EagerGeneration(DistillationTrainer):  # decoding with a growing KV cache stays eager
                    def _generate_single_turn(self, *a, **k):
                        with torch.compiler.set_stance("force_eager"):
                            return super()._generate_single_turn(*a, **k)

                base = EagerGeneration
            cfg = DistillationConfig(**train_args(arm, batch, warmup + steps, lr, seed, out_dir),
                                     max_completion_length=scale.max_new_tokens)
            trainer = traced(base)(model=model, teacher_model=teacher, args=cfg, train_dataset=dataset,
                                   processing_class=tokenizer)
        trainer.bench_tokens, trainer.bench_losses = [], []
        trainer.remove_callback(PrinterCallback)  # the log dicts would litter stdout
        clock = Clock()
        trainer.add_callback(clock)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
        sync()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    marks = clock.marks
    if len(marks) != warmup + steps:
        raise RuntimeError(f"{len(marks)} optimizer steps ran, expected {warmup + steps}")
    seconds = marks[-1] - marks[warmup - 1]
    tokens = [None if t is None else int(t) for t in trainer.bench_tokens]
    step_s = np.diff([clock.begin] + marks).tolist()
    result = dict(arm=arm.name, attn=arm.attn, checkpointing=bool(cfg.activation_checkpointing),
                  compile=arm.compile, liger=arm.liger, tf32=arm.tf32, batch=batch, params=params,
                  warmup_steps=warmup, timed_steps=steps, seconds=seconds, warmup_seconds=marks[warmup - 1] - clock.begin,
                  median_step_s=float(np.median(step_s[warmup:])), step_seconds=step_s, peak_mem_gib=peak,
                  losses=[float(x) for x in trainer.bench_losses], step_tokens=tokens,
                  items_per_s=batch * steps / seconds)
    if all(t is not None for t in tokens):
        result["tokens_per_s"] = sum(tokens[warmup:]) / seconds
    del trainer, model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result
