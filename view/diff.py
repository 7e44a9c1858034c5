"""Differences between two texts (a dedup cluster's kept member and another), word by word, with difflib.

The result is a list of (op, text) segments, op one of "same", "del" (only in the kept text) and
"add" (only in the other); the template wraps them in <del>/<ins>, and Jinja escapes the text.
"""
from __future__ import annotations

import difflib
import re

MAX_TOKENS = 4000  # difflib is quadratic in the worst case: long traces are compared on their start

_TOKEN = re.compile(r"\s+|[^\s]+")


def word_diff(kept: str, other: str) -> list[tuple[str, str]]:
    """Segments turning `kept` into `other`; whitespace is kept so the text reads as written."""
    a, b = _TOKEN.findall(kept or "")[:MAX_TOKENS], _TOKEN.findall(other or "")[:MAX_TOKENS]
    out: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(("same", "".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append(("del", "".join(a[i1:i2])))
        if j2 > j1:
            out.append(("add", "".join(b[j1:j2])))
    return out


def word_similarity(kept: str, other: str) -> float:
    """difflib's ratio over words: 1.0 for identical texts."""
    a, b = (kept or "").split()[:MAX_TOKENS], (other or "").split()[:MAX_TOKENS]
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() if a or b else 1.0
