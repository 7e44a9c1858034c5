"""A dedup cluster (members, differences, which was kept and why) and the preference pairs."""
from __future__ import annotations

from collections.abc import Mapping

from curation.dedup import best_first, sample_text
from curation.verify import VERIFIER
from store.store import Store
from view.diff import word_diff, word_similarity
from view.pages import PageError, choice, loads, paging

STRATEGY_WORDS = {
    "verified": "a trace matching the human gold answer vs one that does not",
    "best_vs_worst": "highest vs lowest verifier or judge score, when the gap reaches the margin",
    "teacher_vs_student": "the best teacher trace vs the student's own (no labels)",
    "judge_pairwise": "a judge preferred it both ways round (position-swapped); margin = |2 P - 1|",
}


def _why_below(kept: dict, other: dict) -> str:
    """Why `other` ranks below the kept member under curation.dedup.best_first (the first key that differs)."""
    a, b = best_first(kept), best_first(other)
    if a[0] != b[0]:
        return f"the kept member passed {VERIFIER}; this one did not"
    if a[1] != b[1]:
        return (f"the kept member has the higher mean judge score ({kept['judge_score'] or 0:.3f} "
                f"vs {other['judge_score'] or 0:.3f})")
    if a[2] != b[2]:
        return f"the kept member is shorter ({a[2]} vs {b[2]} characters)"
    return "a tie on verdict, judge score and length: the smaller id is kept"


def cluster_page(store: Store, method: str, cluster_id: str) -> dict:
    members = store.view_cluster(method, cluster_id, VERIFIER)
    if not members:
        raise PageError(404, f"no {method!r} dedup cluster {cluster_id!r} in this store")
    members.sort(key=best_first)  # the order dedup kept them in: verified, judge score, shorter, id
    best = members[0]
    best_text = sample_text(best)
    rows = []
    for rank, m in enumerate(members, start=1):
        text = sample_text(m)
        rows.append(dict(m, rank=rank, text=text, length=len(text), params=loads(m["params"]),
                         why=None if m is best else _why_below(best, m),
                         diff=None if m is best else word_diff(best_text, text),
                         similarity=None if m is best else word_similarity(best_text, text)))
    stored_kept = [m["id"] for m in members if m["keep"]]
    # Verdicts or judge scores added after dedup ran can change the order; the stored flag is what export used.
    return {"method": method, "cluster_id": cluster_id, "members": rows, "stored_kept": stored_kept,
            "order_changed": stored_kept != [best["id"]], "params": rows[0]["params"], "verifier": VERIFIER}


def pairs_page(store: Store, query: Mapping[str, str]) -> dict:
    facets = store.view_pair_facets()
    pool, strategy = choice(query, "pool", facets["pool"]), choice(query, "strategy", facets["strategy"])
    page = paging(query, size=20)  # each pair holds two whole traces
    rows, total = store.view_pairs(pool, strategy, page.size, page.offset)
    params = {"pool": pool, "strategy": strategy}
    return {"pairs": rows, "facets": facets, "filters": params, "strategy_words": STRATEGY_WORDS,
            "pager": page.info(total, "/pairs", params)}
