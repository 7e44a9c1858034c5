"""Eval decontamination: word n-gram overlap of samples against every held-out split in the store.

The reference set is every prompt of a held-out split (test and calibration, in any pool), its
input and its human rationale: a training sample that shares a 13-gram with one of them (NeMo
Curator's default n) — or contains a whole held-out question of at least `min_words` words —
is contaminated. Results are verdicts ("decontam", passed = clean) whose version hashes the
reference set, so adding a held-out split re-checks everything; exports refuse contaminated rows.
"""
from __future__ import annotations

from core.errors import DistillError

import hashlib

from curation.minhash import normalise
from store.store import Store

VERIFIER = "decontam"
NGRAM = 13
HELD_OUT = ("test", "calibration")
KINDS = ["cot", "revision", "aggregate", "tool_trajectory", "tool_call", "critique"]


def _ngrams(words: list[str], n: int) -> set[int]:
    return {hash(" ".join(words[i:i + n])) for i in range(len(words) - n + 1)}


class Reference:
    """Hashed n-grams of held-out texts, with which prompt each came from."""

    def __init__(self, texts: dict[str, str], n: int = NGRAM, min_words: int = 8):
        self.n, self.min_words = n, min_words
        self.size = len(texts)
        self.owner: dict[int, str] = {}
        self.whole: dict[str, str] = {}
        for pid, text in sorted(texts.items()):
            words = normalise(text).split()
            for h in _ngrams(words, n):
                self.owner.setdefault(h, pid)
            if min_words <= len(words) < n:  # too short for an n-gram, long enough to be specific
                self.whole.setdefault(" ".join(words), pid)
        blob = "\n".join(f"{k}\t{texts[k]}" for k in sorted(texts))
        self.version = f"n{n}-" + hashlib.sha256(blob.encode()).hexdigest()[:12]

    def match(self, text: str) -> str | None:
        """'<held-out prompt id>: <why>' when `text` overlaps the reference, else None."""
        norm = normalise(text)
        words = norm.split()
        for h in _ngrams(words, self.n):
            if h in self.owner:
                return f"{self.owner[h]}: shares a {self.n}-gram"
        padded = f" {norm} "
        for question, pid in self.whole.items():
            if f" {question} " in padded:
                return f"{pid}: contains the whole held-out question"
        return None


def reference(store: Store, splits: tuple[str, ...] = HELD_OUT, n: int = NGRAM) -> Reference:
    texts = {}
    for p in store.held_out_texts(list(splits)):
        texts[p["id"]] = p["input"]
        if p["rationale"]:
            texts[p["id"] + ":rationale"] = p["rationale"]
    return Reference(texts, n)


def decontaminate(store: Store, pool: str, run_id: str, n: int = NGRAM, splits: tuple[str, ...] = HELD_OUT) -> dict:
    """Check the pool's train-split samples (and their prompts) against every held-out split."""
    if not isinstance(n, int) or n < 4:  # short n-grams match everything: every sample would be "contaminated"
        raise DistillError(f"decontamination n-gram size must be an integer >= 4, got {n!r}")
    ref = reference(store, splits, n)
    todo = [s for s in store.samples_to_verify(pool, KINDS, VERIFIER, ref.version) if s["split"] == "train"]
    rows = []
    for s in todo:
        hit = ref.match(f"{s['input']}\n{s['reasoning'] or ''}\n{s['answer'] or ''}")
        rows.append(dict(sample_id=s["id"], verifier=VERIFIER, verifier_version=ref.version, passed=hit is None,
                         score=float(hit is None), detail=hit or "clean", run_id=run_id))
    store.add_verdicts(rows)
    return {"checked": len(rows), "contaminated": sum(not r["passed"] for r in rows), "version": ref.version,
            "reference_texts": ref.size}
