"""The training configuration every trainer uses: fast on CUDA by default, plain TRL on request.

`--speed auto` (the default) is `fast` on a CUDA machine and `cpu` elsewhere:

  fast   bf16 autocast, TF32 matmuls, no activation checkpointing (a 135M-270M student fits an
         80 GB GPU without it; it costs ~30% more compute), regional torch.compile of the decoder
         layers, document-aware varlen attention (train/varlen.py, probed against a reference on
         the GPU first; sdpa when the probe fails), padding-free packing for SFT. On-policy also decodes with a static KV cache and a
         compiled step (train/fast_decode.py) and keeps the frozen teacher in bf16.
  plain  TRL's own defaults (bf16 on a GPU, activation checkpointing on, sdpa, no compile): the
         fallback, and the baseline bench/train_throughput.py measures "fast" against.
  cpu    fp32, no compile, no checkpointing, sdpa: what runs on a machine without CUDA.

One place decides, so `distill train`, `python -m train.*` and the benchmark run the same thing.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any

from core.errors import DistillError

SPEEDS = ("auto", "fast", "plain", "cpu")


@dataclass(frozen=True)
class Speed:
    """What a speed setting resolved to on this machine (recorded with the run)."""
    name: str  # fast | plain | cpu
    cuda: bool
    bf16: bool
    tf32: bool
    activation_checkpointing: bool | None  # None: the trainer's own default (TRL: on)
    compile_layers: bool
    attention: str  # transformers attn_implementation: "sdpa" or train.varlen.VARLEN
    packing: bool  # SFT: padding-free best-fit-decreasing packing
    static_decode: bool  # on-policy: static KV cache and compiled decode step
    why: str = ""  # why the attention is what it is (a failed varlen probe says so)

    def as_dict(self) -> dict:
        return asdict(self)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_speed(speed: str = "auto", *, cuda: bool | None = None, probe: bool = True) -> Speed:
    """The configuration `speed` means here. `cuda` overrides the detection (tests check the CUDA
    configuration on a CPU machine); `probe` runs the varlen kernel's check on the GPU first."""
    if speed not in SPEEDS:
        raise DistillError(f"--speed {speed!r}: use one of {', '.join(SPEEDS)}")
    cuda = _cuda() if cuda is None else cuda
    if speed == "auto":
        speed = "fast" if cuda else "cpu"
    if speed == "fast" and not cuda:
        raise DistillError("--speed fast needs a CUDA GPU (bf16, compile, FlashAttention varlen): "
                           "use --speed cpu or auto on this machine")
    if speed == "cpu":
        return Speed("cpu", cuda, bf16=False, tf32=False, activation_checkpointing=False, compile_layers=False,
                     attention="sdpa", packing=False, static_decode=False)
    if speed == "plain":
        return Speed("plain", cuda, bf16=cuda, tf32=False, activation_checkpointing=None, compile_layers=False,
                     attention="sdpa", packing=False, static_decode=False, why="TRL defaults")
    attention, why = _varlen_or_sdpa(probe)
    return Speed("fast", cuda, bf16=True, tf32=True, activation_checkpointing=False, compile_layers=True,
                 attention=attention, packing=True, static_decode=True, why=why)


def _varlen_or_sdpa(probe: bool) -> tuple[str, str]:
    from train.varlen import VARLEN, probe_varlen, varlen_attn

    if not probe:
        return VARLEN, "varlen (not probed)"
    if varlen_attn is None:
        return "sdpa", "this torch has no torch.nn.attention.varlen"
    error = _probe_once(probe_varlen)
    return (VARLEN, "varlen (FlashAttention-2), probe passed") if error is None else ("sdpa", f"varlen probe: {error}")


@functools.cache
def _probe_once(probe_varlen) -> str | None:
    """Probe the kernel once per process on a GQA + sliding-window shape (both architectures' features)."""
    from transformers import Gemma3TextConfig

    cfg = Gemma3TextConfig(hidden_size=256, num_attention_heads=4, num_key_value_heads=1, head_dim=64,
                           sliding_window=128, layer_types=["sliding_attention", "full_attention"],
                           num_hidden_layers=2)
    return probe_varlen(cfg)


def trainer_arguments(speed: Speed) -> dict[str, Any]:
    """TrainingArguments fields for `speed`; "plain" leaves TRL's defaults alone."""
    if speed.name == "plain":
        return {}
    kw: dict[str, Any] = dict(bf16=speed.bf16, use_cpu=not speed.cuda,
                              activation_checkpointing=bool(speed.activation_checkpointing))
    return kw


def sft_arguments(speed: Speed, max_length: int) -> dict[str, Any]:
    """SFTConfig fields beyond trainer_arguments: packing on the fast path, length-grouped batches on CPU."""
    if speed.packing:
        from train.varlen import PACKED_MAX_LEN

        PACKED_MAX_LEN[0] = max_length  # the kernel's max_seqlen: a constant, so compile never respecialises
        # Best-fit-decreasing packing makes TRL's collator padding-free (one row + cu_seq_lens); a step is
        # batch_size rows of max_length tokens, each document attending only to itself.
        return dict(packing=True, packing_strategy="bfd")
    if speed.name == "cpu":
        # Batches of similar length: prompts with passages vary 20-570 tokens, and padding every row to the
        # longest in a random batch cost ~2x the compute on CPU.
        return dict(train_sampling_strategy="group_by_length")
    return {}


def model_kwargs(speed: Speed) -> dict[str, Any]:
    """`from_pretrained` keywords: fp32 master weights (bf16 comes from autocast) and the attention."""
    return {"dtype": "float32", "attn_implementation": speed.attention}


def apply_globals(speed: Speed) -> None:
    """Process-wide switches: TF32 matmuls, and a recompile budget for compiled layers (shapes vary)."""
    import torch

    torch.set_float32_matmul_precision("high" if speed.tf32 else "highest")
    if speed.compile_layers:
        for attr in ("recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, attr):
                setattr(torch._dynamo.config, attr, 64)


def compile_layers(model: Any, **compile_options: Any) -> Any:
    """Regional torch.compile: each decoder layer (norms, RoPE, MLP fused); the rest stays eager, so
    shapes that change per batch cost one recompile per layer type, not of the whole model.
    `compile_options` go to torch.compile (tests use backend="eager": no C compiler needed)."""
    layers = getattr(getattr(model, "model", model), "layers", None)
    if layers is None:
        raise DistillError(f"{type(model).__name__} has no model.layers to compile: use --speed plain")
    for layer in layers:
        layer.compile(**compile_options)
    return model


def load_student(path: str, speed: Speed, *, attention: str | None = None, compile_model: bool = True) -> Any:
    """The student as TRL will train it: fp32 weights, `speed`'s attention (or `attention`, e.g. sdpa for
    a student that also samples with left padding), compiled layers unless `compile_model` is False."""
    from transformers import AutoModelForCausalLM

    apply_globals(speed)
    kwargs = dict(model_kwargs(speed), **({"attn_implementation": attention} if attention else {}))
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    return compile_layers(model) if speed.compile_layers and compile_model else model


def load_frozen(path: str, speed: Speed, *, attention: str | None = None) -> Any:
    """A frozen model (DPO reference, on-policy teacher): eval mode, no grads, bf16 on the fast path
    (its logits are only read, so fp32 master weights buy nothing)."""
    from transformers import AutoModelForCausalLM

    kwargs = dict(model_kwargs(speed), dtype="bfloat16" if speed.name == "fast" else "float32")
    if attention:
        kwargs["attn_implementation"] = attention
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs).eval().requires_grad_(False)
    return compile_layers(model) if speed.compile_layers else model
