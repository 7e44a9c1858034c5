"""Page contexts shared by every page (errors, query parameters, paging) and the index and run pages.

A page function takes an open read-only Store and the request's query parameters and returns the
dict its template renders; it never builds SQL (store/view_queries.py holds the queries).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from core.process import owner_is_gone
from store.store import Store

PAGE_SIZE = 50
MAX_PAGE = 1_000_000  # OFFSET beyond this is a typo, not a page anyone reads
STATUS_RUNNING = "running"


class PageError(Exception):
    """A page that cannot be shown: the HTTP status and one line saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def loads(value: Any) -> Any:
    """A JSON column as Python (DuckDB returns JSON as text); text that is not JSON stays text."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def path_part(value: object) -> str:
    """One URL path segment: every reserved character quoted, '/' too."""
    return quote(str(value), safe="")


def link(path: str, params: Mapping[str, Any] | None = None) -> str:
    """`path?query` without the empty parameters."""
    kept = {k: v for k, v in (params or {}).items() if v not in (None, "")}
    return path + ("?" + urlencode(kept) if kept else "")


def choice(query: Mapping[str, str], name: str, allowed: tuple[str, ...] | list[str]) -> str | None:
    """A query parameter that must be one of `allowed` (empty: not given)."""
    value = query.get(name) or None
    if value is not None and value not in allowed:
        raise PageError(400, f"{name}={value!r} is not one of: {', '.join(allowed) or '(none in this store)'}")
    return value


def text_param(query: Mapping[str, str], name: str, max_len: int = 200) -> str | None:
    value = (query.get(name) or "").strip()
    if len(value) > max_len:
        raise PageError(400, f"{name} is longer than {max_len} characters")
    return value or None


@dataclass(frozen=True)
class Paging:
    page: int
    size: int = PAGE_SIZE

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size

    def info(self, total: int, path: str, params: Mapping[str, Any]) -> dict:
        """What the pager shows: page n of m and the links either side (same filters)."""
        pages = max(1, -(-total // self.size))
        step = {k: v for k, v in params.items() if k != "page"}
        return {"page": self.page, "pages": pages, "total": total, "first": self.offset + 1 if total else 0,
                "last": min(total, self.offset + self.size),
                "prev": link(path, {**step, "page": self.page - 1}) if self.page > 1 else None,
                "next": link(path, {**step, "page": self.page + 1}) if self.page < pages else None}


def paging(query: Mapping[str, str], size: int = PAGE_SIZE) -> Paging:
    raw = query.get("page") or "1"
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise PageError(400, f"page={raw!r} must be a whole number from 1 to {MAX_PAGE}")
    return Paging(int(raw), size)


# -- the index -----------------------------------------------------------------------------------


def index_page(store: Store) -> dict:
    counts = {t: store.count(t) for t in ("runs", "prompts", "requests", "samples", "verdicts", "dedup", "purified",
                                          "pairs", "evals")}
    running = store.count("runs", "status = ?", [STATUS_RUNNING])
    return {"pools": store.view_pools(), "evals": store.view_evals()[:20], "counts": counts, "running": running}


# -- runs -------------------------------------------------------------------------------------------


def _seconds(a: datetime | None, b: datetime | None) -> float | None:
    return (b - a).total_seconds() if a is not None and b is not None else None


def _live(rows: list[dict]) -> dict[str, dict]:
    """Per run, what its requests say so far: counts by status, tokens, cost, errors by class, times."""
    out: dict[str, dict] = {}
    for r in rows:
        live = out.setdefault(r["run_id"], {"requests": 0, "by_status": {}, "tokens": 0, "cost_usd": 0.0,
                                            "errors": {}, "first_at": None, "last_at": None, "models": set()})
        live["requests"] += r["n"]
        live["by_status"][r["status"]] = live["by_status"].get(r["status"], 0) + r["n"]
        live["tokens"] += int(r["prompt_tokens"]) + int(r["completion_tokens"])
        live["cost_usd"] += float(r["cost_usd"])
        live["models"].add(r["model"])
        if r["error_class"]:
            key = r["error_class"][:40]
            live["errors"][key] = live["errors"].get(key, 0) + r["n"]
        live["first_at"] = min(filter(None, [live["first_at"], r["first_at"]]), default=None)
        live["last_at"] = max(filter(None, [live["last_at"], r["last_at"]]), default=None)
    return out


def _from_summary(summary: dict) -> dict:
    """The same totals from a finished run's summary (per model, written by Store.finish_run)."""
    models = {m: v for m, v in summary.items() if isinstance(v, dict) and "requests" in v}
    errors: dict[str, int] = {}
    by_status: dict[str, int] = {}
    for v in models.values():
        for k, n in (v.get("errors") or {}).items():
            errors[k] = errors.get(k, 0) + n
        for k, n in (v.get("by_status") or {}).items():
            by_status[k] = by_status.get(k, 0) + n
    return {"requests": sum(v["requests"] for v in models.values()), "by_status": by_status, "errors": errors,
            "tokens": sum(int(v.get("prompt_tokens", 0)) + int(v.get("completion_tokens", 0))
                          for v in models.values()),
            "cost_usd": sum(float(v.get("cost_usd", 0.0)) for v in models.values()), "models": set(models)}


def _run_row(run: dict, live: dict | None) -> dict:
    summary, timings = loads(run["summary"]) or {}, loads(run["timings"]) or {}
    # A run left `running` by a process that died is marked interrupted by the next writer; the viewer
    # never writes, so it says so itself and stops refreshing.
    gone = run["status"] == STATUS_RUNNING and owner_is_gone(run.get("owner"))
    running = run["status"] == STATUS_RUNNING and not gone
    totals = (live or _from_summary({})) if running or not isinstance(summary, dict) else _from_summary(summary)
    wall = timings.get("wall_s") if isinstance(timings, dict) else None
    row = dict(run, config=loads(run["config"]), summary=summary, timings=timings, wall_s=wall, totals=totals,
               running=running, error=summary.get("error") if isinstance(summary, dict) else None,
               cached=bool(isinstance(summary, dict) and summary.get("cached")), gone=gone)
    if running and live:
        elapsed = _seconds(run["started_at"], live["last_at"])
        done = live["by_status"].get("done", 0)
        row["progress"] = {"done": done, "elapsed_s": elapsed,
                           "rows_per_s": done / elapsed if elapsed and elapsed > 0 else None}
    return row


def runs_page(store: Store, query: Mapping[str, str]) -> dict:
    stages = store.view_run_stages()
    stage = choice(query, "stage", stages)
    page = paging(query)
    runs, total = store.view_runs(page.size, page.offset, stage)
    running_ids = [r["id"] for r in runs if r["status"] == STATUS_RUNNING]
    live = _live(store.view_run_requests(running_ids)) if running_ids else {}
    rows = [_run_row(r, live.get(r["id"])) for r in runs]
    return {"runs": rows, "stages": stages, "stage": stage, "refresh": any(r["running"] for r in rows),
            "pager": page.info(total, "/runs", {"stage": stage})}


def run_page(store: Store, run_id: str) -> dict:
    run = store.view_run(run_id)
    if run is None:
        raise PageError(404, f"no run {run_id!r} in this store")
    request_rows = store.view_run_requests([run_id])
    live = _live(request_rows).get(run_id)
    row = _run_row(run, live)
    if row["running"] and live:
        # Over the last minute, or since the start when the run is younger than that.
        window = min(60.0, row["progress"]["elapsed_s"] or 60.0)
        row["progress"]["recent_per_s"] = store.view_run_recent(run_id, 60) / window if window > 0 else None
    per_model: dict[str, dict] = {}
    hits = store.view_run_cache_hits(run_id)

    def entry(model: str) -> dict:
        return per_model.setdefault(model, {"requests": 0, "by_status": {}, "tokens": 0, "cost_usd": 0.0,
                                            "cache_hits": hits.get(model, 0)})
    for model in hits:  # a model whose every request was a cache hit made no request row
        entry(model)
    for r in request_rows:  # the table under the totals: what each model did in this run
        m = entry(r["model"])
        m["requests"] += r["n"]
        m["by_status"][r["status"]] = m["by_status"].get(r["status"], 0) + r["n"]
        m["tokens"] += int(r["prompt_tokens"]) + int(r["completion_tokens"])
        m["cost_usd"] += float(r["cost_usd"])
    row["cache_hits"] = sum(hits.values())
    return {"run": row, "per_model": per_model, "samples": store.view_run_samples(run_id),
            "refresh": row["running"]}
