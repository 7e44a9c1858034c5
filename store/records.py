"""Rows of store tables that several stages build (synth's pairwise judge and curation's pair builder)."""
from __future__ import annotations

from prompts.rows import stable_id

TRACE_KINDS = ("cot", "revision")  # sample kinds that hold a reasoning trace and an answer


def make_pair(prompt_id: str, chosen: dict, rejected: dict, strategy: str, margin: float, run_id: str) -> dict:
    """A `pairs` row; the id hashes strategy + both samples, so rebuilding a pair replaces it."""
    return dict(id="x" + stable_id(strategy, chosen["id"], rejected["id"]), prompt_id=prompt_id,
                chosen_sample_id=chosen["id"], rejected_sample_id=rejected["id"], strategy=strategy,
                margin=margin, run_id=run_id)
