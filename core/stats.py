"""Statistics shared across layers: the percentile bootstrap behind every interval we report."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import math

import numpy as np


def bootstrap_ci(
    fn: Callable[..., float],
    *arrays: Any,
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """Percentile bootstrap of ``fn(*arrays)``: returns (point, low, high).

    Items are resampled jointly (the same indices for every array), so paired
    statistics such as "cascade minus random on the same items" keep their pairing.
    Resamples where ``fn`` is undefined (nan, e.g. AUROC with one class) are ignored.
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    data = [np.asarray(a) for a in arrays]
    m = len(data[0])
    if m == 0 or any(len(a) != m for a in data):
        raise ValueError("bootstrap_ci needs non-empty arrays of equal length")
    if not 0 < alpha < 1 or n < 1:
        raise ValueError("need 0 < alpha < 1 and n >= 1")
    point = float(fn(*data))
    rng = np.random.default_rng(seed)
    stats = np.empty(n)
    for b in range(n):
        idx = rng.integers(0, m, size=m)
        stats[b] = fn(*(a[idx] for a in data))
    if np.all(np.isnan(stats)):
        return point, math.nan, math.nan
    low, high = np.nanpercentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return point, float(low), float(high)


# --- routing curves (RouteLLM metrics) -------------------------------------------
