"""Which device and dtype local models run on: the GPU when there is one, unless told otherwise.

Generation, option scoring and `distill serve` all load models through clients.models.load_model,
which asks pick_device and pick_dtype. torch is imported inside the functions, not at the top:
the CLI checks a --device value while parsing (check_device_name), before torch or a model loads.
"""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from core.errors import DistillError

if TYPE_CHECKING:
    import torch

DEVICE_ENV = "DISTILL_DEVICE"
DTYPE_ENV = "DISTILL_DTYPE"
DTYPES = ("float32", "bfloat16", "float16")
DEVICE_HELP = "auto (the GPU when torch sees one, else cpu), cpu, cuda or cuda:N"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_name(text: str, source: str = "--device") -> str:
    """`text` when it is auto, cpu, cuda or cuda:N; otherwise a one-line DistillError naming `source`.

    Only the spelling is checked (no torch import), so a CLI can refuse a typo before anything loads.
    """
    name = text.strip().lower()
    if not _DEVICE.fullmatch(name):
        raise DistillError(f"{source} {text!r} is not a device: use {DEVICE_HELP}")
    return name


def pick_device(requested: str | None = None) -> str:
    """The torch device local models run on: "cuda" when torch sees a GPU, else "cpu".

    `requested` None or "auto" defers to the environment variable DISTILL_DEVICE (e.g.
    `DISTILL_DEVICE=cpu distill demo` keeps a GPU machine on the CPU without flags); when that is
    unset or "auto" too, the GPU is used if torch.cuda.is_available(). An explicit "cpu", "cuda"
    or "cuda:N" (flag or variable) is honoured; a flag wins over the variable. An unknown name, or
    a CUDA device torch cannot see, raises DistillError with one line naming the problem and the fix.
    """
    source, name = "--device", (requested or "auto").strip().lower()
    if name == "auto" and os.environ.get(DEVICE_ENV, "").strip():
        source, name = DEVICE_ENV, os.environ[DEVICE_ENV]
    name = check_device_name(name, source)
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    if not torch.cuda.is_available():
        raise DistillError(f"{source} {name}: torch sees no CUDA GPU here (a CPU-only torch build, or no driver); "
                           f"use {source} cpu or auto")
    index = int(name.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise DistillError(f"{source} {name}: torch sees {torch.cuda.device_count()} GPU(s), numbered from 0; "
                           "pick one of them or use cuda")
    return name


def pick_dtype(device: str, requested: str | None = None) -> torch.dtype:
    """The dtype weights load in on `device`: bfloat16 on a GPU with native bf16, else float32.

    float32 on the CPU on purpose: bf16 there is slow and changes these small models' answers.
    A GPU without native bf16 (pre-Ampere) gets float32 rather than float16, which overflows in
    Gemma's activations. `requested` ("float32", "bfloat16" or "float16"), or else the environment
    variable DISTILL_DTYPE, overrides the choice (e.g. DISTILL_DTYPE=float32 for exact fp32 on a GPU).
    """
    import torch

    source, name = "dtype", (requested or "").strip().lower()
    if not name and os.environ.get(DTYPE_ENV, "").strip():
        source, name = DTYPE_ENV, os.environ[DTYPE_ENV].strip().lower()
    if name and name != "auto":
        if name not in DTYPES:
            raise DistillError(f"{source} {name!r} is not a dtype: use auto, {', '.join(DTYPES)}")
        return getattr(torch, name)
    if device.startswith("cuda") and _native_bf16(torch):
        return torch.bfloat16
    return torch.float32


def _native_bf16(torch: object) -> bool:
    cuda = torch.cuda  # type: ignore[attr-defined]
    try:  # emulated bf16 (pre-Ampere) is slower than fp32: only native support counts
        return bool(cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch < 2.3 has no including_emulation and reports native support only
        return bool(cuda.is_bf16_supported())
