"""A layer-pruned student initialised from its teacher (DistilBERT / Minitron style).

    python -m train.prune --teacher smollm2-135m-instruct --keep every-other \
        --output runs/students/smollm2-half

The student keeps a subset of the teacher's decoder layers (in their order) together with
the teacher's embeddings, final norm and LM head, so it starts far closer to the teacher
than a random init; distil or fine-tune it afterwards (`train.sft`, `train.dpo`).
`--keep` is `every-other` (layers 0, 2, 4, ...), `first-half`, or explicit indices
(`0,1,5,-1`). The saved directory is a plain checkpoint that AutoModelForCausalLM loads;
the config's `num_hidden_layers` and per-layer lists (Gemma 3's `layer_types`) describe
the kept layers. Re-running with the same teacher and layers reuses the directory.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import DistillError
from store.runs import recorded_run
from train.common import record_summary
from train.cli import run_script

if TYPE_CHECKING:
    from transformers import PreTrainedModel

KEEP_PRESETS = ("every-other", "first-half")
# Config lists with one entry per decoder layer; they are subset together with the layers.
PER_LAYER_KEYS = ("layer_types", "no_rope_layers")
MARKER = "prune.json"


def resolve_keep(keep: list[int] | str, num_layers: int) -> list[int]:
    """Turn a preset name, "0,2,5" or a list of (possibly negative) indices into sorted layer indices."""
    if isinstance(keep, str):
        if keep == "every-other":
            return list(range(0, num_layers, 2))
        if keep == "first-half":
            return list(range(max(1, num_layers // 2)))
        try:
            keep = [int(part) for part in keep.split(",") if part.strip()]
        except ValueError:
            raise DistillError(f"unknown --keep {keep!r}: use {', '.join(KEEP_PRESETS)} or layer indices "
                               "like 0,2,5") from None
    indices = [i + num_layers if i < 0 else i for i in keep]
    bad = [k for k, i in zip(keep, indices) if not 0 <= i < num_layers]
    if bad:
        raise DistillError(f"layer(s) {bad} out of range: the teacher has {num_layers} layers (0..{num_layers - 1})")
    if not indices:
        raise DistillError("keep at least one layer")
    if len(set(indices)) != len(indices):
        raise DistillError(f"layers {list(keep)} repeat an index: each teacher layer can be kept once")
    return sorted(indices)


def _decoder_layers(model: PreTrainedModel):
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise DistillError(f"{type(model).__name__} has no model.layers: layer pruning supports decoder-only "
                           "models such as Llama, SmolLM, Qwen, Gemma 3")
    return layers


def prune_model(model: PreTrainedModel, keep: list[int]) -> PreTrainedModel:
    """Keep only `keep` (sorted, valid) decoder layers of `model`, in place; returns `model`.

    Each attention module indexes the KV cache by its own `layer_idx`, so kept layers are
    renumbered 0..len(keep)-1; otherwise generation with a cache writes past the cache (or
    into another layer's slot).
    """
    import torch

    layers = _decoder_layers(model)
    config = model.config.get_text_config()
    old_n = len(layers)
    model.model.layers = torch.nn.ModuleList([layers[i] for i in keep])
    for new_idx, layer in enumerate(model.model.layers):
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_idx
    for key in PER_LAYER_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, (list, tuple)) and len(value) == old_n:
            setattr(config, key, [value[i] for i in keep])
    config.num_hidden_layers = len(keep)
    return model


def _fingerprint(teacher: str, teacher_dir: Path, keep: list[int]) -> str:
    """Teacher name, its config and weight file sizes, and the kept layers (weights are not read)."""
    h = hashlib.sha256(json.dumps([teacher, keep]).encode())
    for path in sorted(teacher_dir.iterdir()):
        if path.is_file():
            h.update(f"{path.name}:{path.stat().st_size}".encode())
    config = teacher_dir / "config.json"
    if config.is_file():
        h.update(config.read_bytes())
    return h.hexdigest()[:12]


def prune_layers(teacher: str, keep: list[int] | str = "every-other",
                 output_dir: str | Path = "runs/pruned") -> Path:
    """Save `teacher` with only the `keep` decoder layers (and its tokenizer) to `output_dir`; return it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from clients.models import model_path

    output_dir = Path(output_dir)
    teacher_dir = model_path(teacher)
    num_layers = AutoConfig.from_pretrained(teacher_dir).get_text_config().num_hidden_layers
    indices = resolve_keep(keep, num_layers)
    fingerprint = _fingerprint(teacher, teacher_dir, indices)
    marker = output_dir / MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("fingerprint") == fingerprint:
        return output_dir
    if output_dir.exists() and not marker.is_file() and any(output_dir.iterdir()):
        raise DistillError(f"{output_dir} exists and is not a pruned model: choose an empty or new --output")

    model = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    prune_model(model, indices)
    # Write into a temp dir and rename at the end, so a killed run never leaves a half-written model.
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_dir.with_name(f".{output_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {"fingerprint": fingerprint, "teacher": teacher, "teacher_dir": str(teacher_dir),
                "teacher_layers": num_layers, "kept_layers": indices, "keep": keep,
                "parameters": sum(p.numel() for p in model.parameters())}
        (tmp / MARKER).write_text(json.dumps(info, indent=1))
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(tmp, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="registry name, path or HF id")
    parser.add_argument("--keep", default="every-other",
                        help="every-other, first-half, or comma-separated layer indices (negative ones count from the end)")
    parser.add_argument("--output", required=True, help="directory for the pruned model")
    parser.add_argument("--store", default=None, help="DuckDB store to record the run in (config, model dir)")
    args = parser.parse_args(argv)
    marker = Path(args.output) / MARKER
    before = marker.read_text() if marker.is_file() else None
    with recorded_run(args.store, "train-prune", vars(args)) as run:
        out = prune_layers(args.teacher, args.keep, args.output)
        after = (out / MARKER).read_text()
        # A new prune always writes a new fingerprint, so an unchanged marker means the dir was reused.
        record_summary(run, dict(json.loads(after), model_dir=str(out), cached=after == before))
    print(json.dumps(run.summary, indent=1))


if __name__ == "__main__":
    run_script(main)
