"""A pool's prompts (filters, search, pages) and one prompt with every teacher's samples side by side."""
from __future__ import annotations

from collections.abc import Mapping

from store.store import Store
from store.view_queries import DEDUP_STATES, OUTCOMES, PURIFIED_STATES, YES_NO, PromptFilters
from view.pages import PageError, choice, loads, paging, path_part, text_param

# Order of sample kinds within a teacher's column: the trace first, what was made from it after.
KIND_ORDER = ("cot", "critique", "revision", "aggregate", "tool_call", "tool_step", "tool_trajectory")


def pool_page(store: Store, pool: str, query: Mapping[str, str]) -> dict:
    facets = store.view_pool_facets(pool)
    if not facets["split"]:
        raise PageError(404, f"no pool {pool!r} in this store")
    verifier = choice(query, "verifier", facets["verifier"]) or "answer_match"
    filters = PromptFilters(
        split=choice(query, "split", facets["split"]), teacher=choice(query, "teacher", facets["teacher"]),
        kind=choice(query, "kind", facets["kind"]), outcome=choice(query, "outcome", OUTCOMES), verifier=verifier,
        contaminated=choice(query, "contaminated", YES_NO), dedup=choice(query, "dedup", DEDUP_STATES),
        purified=choice(query, "purified", PURIFIED_STATES), search=text_param(query, "q"))
    page = paging(query)
    rows, total = store.view_pool_prompts(pool, filters, page.size, page.offset)
    tallies = store.view_prompt_tallies([r["id"] for r in rows], verifier)
    for r in rows:
        r["tally"] = tallies.get(r["id"], {"samples": 0, "teachers": [], "passed": 0, "failed": 0, "dropped": 0,
                                           "contaminated": 0})
    params = {"split": filters.split, "teacher": filters.teacher, "kind": filters.kind, "outcome": filters.outcome,
              "verifier": query.get("verifier"), "contaminated": filters.contaminated, "dedup": filters.dedup,
              "purified": filters.purified, "q": filters.search}
    menus = [("split", facets["split"]), ("teacher", facets["teacher"]), ("kind", facets["kind"]),
             ("outcome", list(OUTCOMES)), ("verifier", facets["verifier"]), ("contaminated", list(YES_NO)),
             ("dedup", list(DEDUP_STATES)), ("purified", list(PURIFIED_STATES))]
    return {"pool": pool, "rows": rows, "filters": params, "menus": menus, "verifier": verifier,
            "pager": page.info(total, f"/pools/{path_part(pool)}", params)}


def _timelines(steps: list[dict]) -> list[list[dict]]:
    """Tool steps as rollouts: each chain of parent_id links, first step first."""
    ids = {s["id"] for s in steps}
    children: dict[str, list[dict]] = {}
    for s in steps:
        children.setdefault(s["parent_id"], []).append(s)
    out = []
    for root in [s for s in steps if s["parent_id"] not in ids]:
        chain, node = [], root
        while node is not None:
            chain.append(node)
            nxt = children.get(node["id"], [])
            node = nxt[0] if nxt else None
        out.append(chain)
    return out


def _messages(sample: dict) -> list[dict] | None:
    """A tool trajectory's chat messages (its reasoning column holds them as JSON)."""
    value = loads(sample["reasoning"])
    return value if isinstance(value, list) and all(isinstance(m, dict) for m in value) else None


def _card(s: dict, verdicts: list[dict], dedup: list[dict], picks: list[dict], children: list[dict]) -> dict:
    extra = loads(s["extra"]) if s.get("extra") else {}
    step = extra.get("react_step") if isinstance(extra, dict) else None
    judges = [v for v in verdicts if (v["verifier"] or "").startswith("judge")]
    others = [v for v in verdicts if not (v["verifier"] or "").startswith("judge")]
    return dict(s, verdicts=others, judges=[dict(v, ratings=loads(v["detail"])) for v in judges], dedup=dedup,
                picks=[dict(p, detail=loads(p["detail"])) for p in picks], children=children,
                observation=step.get("observation") if isinstance(step, dict) else None,
                messages=_messages(s) if s["kind"] == "tool_trajectory" else None)


def prompt_page(store: Store, prompt_id: str) -> dict:
    prompt = store.view_prompt(prompt_id)
    if prompt is None:
        raise PageError(404, f"no prompt {prompt_id!r} in this store")
    samples = store.view_prompt_samples(prompt_id)
    ids = [s["id"] for s in samples]
    verdicts: dict[str, list[dict]] = {}
    for v in store.view_verdicts(ids):
        verdicts.setdefault(v["sample_id"], []).append(v)
    dedup: dict[str, list[dict]] = {}
    for d in store.view_dedup(ids):
        dedup.setdefault(d["sample_id"], []).append(d)
    purified = [dict(u, detail=loads(u["detail"])) for u in store.view_purified(prompt_id)]
    picks: dict[str, list[dict]] = {}
    for u in purified:
        picks.setdefault(u["sample_id"], []).append(u)
    children: dict[str, list[dict]] = {}
    for s in samples:
        if s["parent_id"]:
            children.setdefault(s["parent_id"], []).append({"id": s["id"], "kind": s["kind"], "teacher": s["teacher"]})
    by_id = {s["id"]: s for s in samples}
    cards = [_card(s, verdicts.get(s["id"], []), dedup.get(s["id"], []), picks.get(s["id"], []),
                   children.get(s["id"], [])) for s in samples]
    for c in cards:  # a critique or revision names what it comments on or revises
        parent = by_id.get(c["parent_id"]) if c["parent_id"] else None
        c["parent"] = {"id": parent["id"], "kind": parent["kind"], "teacher": parent["teacher"]} if parent else None
    columns: dict[str, dict] = {}
    rank = {k: i for i, k in enumerate(KIND_ORDER)}
    for c in sorted(cards, key=lambda c: (rank.get(c["kind"], len(rank)), str(c["created_at"] or ""), c["id"])):
        col = columns.setdefault(c["teacher"], {"teacher": c["teacher"], "cards": [], "steps": []})
        (col["steps"] if c["kind"] == "tool_step" else col["cards"]).append(c)
    for col in columns.values():
        col["timelines"] = _timelines(col.pop("steps"))
    return {"prompt": dict(prompt, choices=loads(prompt["choices"]), meta=loads(prompt["meta"])),
            "columns": [columns[t] for t in sorted(columns)], "purified": purified, "n_samples": len(samples)}
