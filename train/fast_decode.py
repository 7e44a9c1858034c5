"""On-policy distillation's fast sampling: a static KV cache and a compiled decode step.

An on-policy step is decode-bound: the student samples `max_new_tokens` tokens one at a time,
and TRL's DistillationTrainer does it with a growing (dynamic) KV cache in fp32, eager, with
compilation switched off (`GenerationConfig(disable_compile=True)`). transformers already has
the fast path: a StaticCache (fixed shapes) makes `generate` compile the one-token forward
(CUDA graphs, mode "reduce-overhead"). Here we only switch it on and bucket prompt lengths so the
cache and the graph are reused across batches. Sampling stays in the weights' fp32 (TF32
matmuls on the fast path): under bf16 autocast RoPE hands the cache fp32 keys and bf16 values,
and StaticCache's index_copy_ refuses the mix. The teacher's scoring of the samples is already
one batched forward in TRL's loss (its weights in bf16).
"""
from __future__ import annotations

from typing import Any

# Prompts are left-padded to a multiple of this: a handful of cache shapes (and compiled graphs)
# instead of one per batch's longest prompt.
PROMPT_BUCKET = 64


def static_decode_class(base: type) -> type:
    """`base` (a DistillationTrainer) sampling outside autocast: accelerate wraps a bf16 model's forward
    in autocast, which generation inherits through TRL's unwrapped model (see the module doc)."""
    import torch

    class StaticDecodeDistillationTrainer(base):
        def _generate_single_turn(self, *args: Any, **kwargs: Any):
            with torch.autocast(self.accelerator.device.type, enabled=False):
                return super()._generate_single_turn(*args, **kwargs)

    StaticDecodeDistillationTrainer.__name__ = f"StaticDecode{base.__name__}"
    return StaticDecodeDistillationTrainer


def use_static_cache(trainer: Any, compile_decode: bool) -> None:
    """Sample with a StaticCache; `compile_decode` lets transformers compile the decode step
    (it does so on CUDA only). Called once after the trainer is built."""
    from transformers import CompileConfig, GenerationConfig

    kwargs = dict(trainer.generation_kwargs, cache_implementation="static")
    trainer.generation_kwargs = kwargs  # TRL overrides the model's generation config with these
    trainer.generation_config = GenerationConfig(
        **kwargs, disable_compile=not compile_decode,
        compile_config=CompileConfig(fullgraph=False, dynamic=False, mode="reduce-overhead"))
