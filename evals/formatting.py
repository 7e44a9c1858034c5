"""Formatting helpers shared by the one report writer (evals.report).

Undefined metrics arrive as None, NaN or an infinity and render as "n/a"; nothing is computed here.
"""
from __future__ import annotations

import math
from typing import Any


def missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def pct(x: Any, digits: int = 1) -> str:
    return "n/a" if missing(x) else f"{100 * x:.{digits}f}%"


def num(x: Any, fmt: str = ".3f") -> str:
    return "n/a" if missing(x) else format(x, fmt)


def cell(text: str) -> str:
    """Model names go into a markdown table: a literal '|' would split the cell."""
    return str(text).replace("|", "\\|")
