"""The DuckDB store: the one module that owns SQL.

Every stage reads from and writes to one DuckDB file. Rows carry their lineage (run id,
teacher, template hash, params hash) so any sample joins back to its prompt, its teacher
request and the run that made it. The schema is versioned: MIGRATIONS (store/schema.py)
is an ordered list of plain functions, and the ones already applied are recorded in
`schema_migrations`. Queries of the curation stages live in store/queries.py, and the
read-only queries of `distill view` in store/view_queries.py: parts of this class kept in their
own files for size.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterable

import duckdb
import pyarrow as pa

from store.schema import MIGRATIONS
from store.queries import CurationQueries, to_json
from store.view_queries import ViewQueries
from core.errors import DistillError, RequestsIncomplete
from core.process import owner_is_gone, process_owner
from core.secrets import public_config
from prompts.rows import PromptRow

__all__ = ["MIGRATIONS", "Store", "git_sha"]


def git_sha() -> str | None:
    """The commit of the code that wrote a run, for lineage; None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None




class Store(CurationQueries, ViewQueries):
    """One DuckDB file. Open it, use it, close it (or use `with Store(path) as store:`)."""

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        if read_only and not self.path.exists():
            raise DistillError(f"store {self.path} does not exist: run a stage that writes it first")
        if not read_only:
            parent = self.path.parent.resolve()
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise DistillError(f"cannot create store directory {parent}: {err.strerror}; "
                                   "pass --store with a writable path") from None
            if not os.access(parent, os.W_OK) or (self.path.exists() and not os.access(self.path, os.W_OK)):
                raise DistillError(f"store path {self.path} is not writable: pass --store with a writable path")
        self.snapshot: str | None = None  # a private copy, read while another process writes the store
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as err:
            holder = re.search(r"Conflicting lock is held in .*\(PID (\d+)\)", str(err))
            if holder and read_only:
                self.con = self._open_snapshot()
            elif holder:
                raise DistillError(f"store {self.path} is being written by another distill process (PID "
                                   f"{holder.group(1)}): wait for it to finish, or pass another --store") from None
            else:
                raise DistillError(f"cannot open store {self.path}: {str(err).splitlines()[0]}") from None
        if not read_only:
            self.migrate()
            self.mark_interrupted_runs()

    def _open_snapshot(self) -> duckdb.DuckDBPyConnection:
        """DuckDB lets one process write a file and no other open it: a read-only command reads a copy
        (file and write-ahead log, as of now) instead, so `distill report` works while a stage runs."""
        self.snapshot = tempfile.mkdtemp(prefix="distill-snapshot-")
        copy = Path(self.snapshot) / self.path.name
        shutil.copyfile(self.path, copy)
        if Path(str(self.path) + ".wal").exists():
            shutil.copyfile(str(self.path) + ".wal", str(copy) + ".wal")
        print(f"note: {self.path} is being written by another process; reading a snapshot of it as of now",
              file=sys.stderr, flush=True)
        try:
            return duckdb.connect(str(copy))
        except duckdb.Error as err:
            raise DistillError(f"store {self.path} is being written by another process and its snapshot cannot be "
                               f"read ({str(err).splitlines()[0]}): try again when the writer finishes") from None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()
        if self.snapshot:
            shutil.rmtree(self.snapshot, ignore_errors=True)

    # -- schema -------------------------------------------------------------------------
    def migrate(self) -> list[str]:
        """Apply the migrations not yet recorded; returns the names applied now."""
        self.con.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP DEFAULT current_timestamp)""")
        done = {v for (v,) in self.con.execute("SELECT version FROM schema_migrations").fetchall()}
        if done and max(done) > len(MIGRATIONS):
            raise DistillError(f"store {self.path} has schema version {max(done)}, newer than this distill knows "
                               f"({len(MIGRATIONS)}): upgrade distill, or use another --store")
        applied = []
        for version, migration in enumerate(MIGRATIONS, start=1):
            if version in done:
                continue
            with self.transaction():
                migration(self.con)
                self.con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                                 [version, migration.__name__])
            applied.append(migration.__name__)
        return applied

    def schema_version(self) -> int:
        return self.con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]

    def transaction(self) -> "_Transaction":
        return _Transaction(self.con)

    # -- runs ---------------------------------------------------------------------------
    def start_run(self, stage: str, config: dict) -> str:
        """Use store.runs.recorded_run, which also finishes the run; the config is written without secrets."""
        run_id = f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.con.execute("INSERT INTO runs (id, stage, config, git_sha, owner) VALUES (?, ?, ?, ?, ?)",
                         [run_id, stage, to_json(public_config(config)), git_sha(), process_owner()])
        return run_id

    def mark_interrupted_runs(self) -> list[str]:
        """Runs left `running` by a process of this host that is gone (kill -9) become `interrupted`."""
        running = self.con.execute("SELECT id, owner FROM runs WHERE status = 'running'").fetchall()
        gone = [run_id for run_id, owner in running if owner_is_gone(owner)]
        for run_id in gone:
            self.con.execute("UPDATE runs SET status = 'interrupted', finished_at = current_timestamp WHERE id = ?",
                             [run_id])
        return gone

    def finish_run(self, run_id: str, status: str = "done", timings: dict | None = None,
                   summary: dict | None = None, config: dict | None = None) -> None:
        """Close a run. `summary` replaces the teacher-call summary (training runs make no calls);
        `config` replaces the one given at start (a trainer resolves its full config only once built)."""
        summary = self.run_summary(run_id) if summary is None else summary
        self.con.execute("UPDATE runs SET finished_at = current_timestamp, status = ?, timings = ?, summary = ?, "
                         "config = coalesce(?, config) WHERE id = ?",
                         [status, to_json(timings), to_json(summary),
                          to_json(public_config(config) if config is not None else None), run_id])

    def add_cache_hits(self, run_id: str | None, model: str, hits: int) -> None:
        """Count requests this run found finished in the store (a cache hit writes no request row)."""
        if run_id and hits > 0:
            self.con.execute("INSERT INTO cache_hits VALUES (?, ?, ?) ON CONFLICT (run_id, model) "
                             "DO UPDATE SET hits = cache_hits.hits + excluded.hits", [run_id, model, hits])

    def run_summary(self, run_id: str) -> dict:
        """Per model: requests by status, tokens, cost and error classes of this run's teacher calls,
        and the cache hits it had (requests found finished, not paid again)."""
        summary: dict[str, dict] = {}

        def model_entry(model: str) -> dict:
            return summary.setdefault(model, {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                              "cost_usd": 0.0, "by_status": {}, "errors": {}, "cache_hits": 0})
        for r in self._dicts("""
                SELECT model, status, coalesce(error, '') AS error_class, count(*) AS n,
                       coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
                       coalesce(sum(completion_tokens), 0) AS completion_tokens,
                       coalesce(sum(cost_usd), 0) AS cost_usd
                FROM requests WHERE run_id = ? GROUP BY ALL ORDER BY ALL""", [run_id]):
            m = model_entry(r["model"])
            m["requests"] += r["n"]
            m["prompt_tokens"] += int(r["prompt_tokens"])
            m["completion_tokens"] += int(r["completion_tokens"])
            m["cost_usd"] += float(r["cost_usd"])
            m["by_status"][r["status"]] = m["by_status"].get(r["status"], 0) + r["n"]
            if r["error_class"]:
                key = r["error_class"].split(":")[0][:40]
                m["errors"][key] = m["errors"].get(key, 0) + r["n"]
        for r in self._dicts("SELECT model, hits FROM cache_hits WHERE run_id = ? ORDER BY model", [run_id]):
            model_entry(r["model"])["cache_hits"] = int(r["hits"])
        return summary

    def requests_outcome(self, run_id: str) -> str | None:
        """None when every request of the run is done; else one line: done / failed by class / left."""
        models = self.run_summary(run_id)
        by_status: dict[str, int] = {}
        errors: dict[str, int] = {}
        for m in models.values():
            for status, n in m["by_status"].items():
                by_status[status] = by_status.get(status, 0) + n
            for kind, n in m["errors"].items():
                errors[kind] = errors.get(kind, 0) + n
        total, done = sum(by_status.values()), by_status.get("done", 0)
        if done == total:
            return None
        failed = by_status.get("error", 0)
        classes = ", ".join(f"{kind} {n}" for kind, n in sorted(errors.items(), key=lambda kv: -kv[1]))
        return (f"{done} of {total} teacher requests done, {failed} failed ({classes or 'no class'}), "
                f"{total - done - failed} left; run the same command again to retry them")

    def check_requests_done(self, run_id: str) -> None:
        """Raise RequestsIncomplete (exit 3 in the CLI) when the run left teacher requests undone."""
        incomplete = self.requests_outcome(run_id)
        if incomplete:
            raise RequestsIncomplete(incomplete)

    def runs(self, stage: str | None = None) -> list[dict]:
        sql = "SELECT * FROM runs" + (" WHERE stage = ?" if stage else "") + " ORDER BY started_at"
        return self._dicts(sql, [stage] if stage else [])

    # -- prompts ------------------------------------------------------------------------
    def pools_holding(self, ids: list[str]) -> dict[str, int]:
        """How many of these prompt ids each pool already holds."""
        if not ids:
            return {}
        rows = self._dicts("SELECT pool, count(*) AS n FROM prompts WHERE id IN (SELECT unnest(?::VARCHAR[])) "
                           "GROUP BY pool", [ids])
        return {r["pool"]: r["n"] for r in rows}

    def add_prompts(self, rows: Iterable[PromptRow], pool: str, run_id: str | None = None) -> int:
        """Insert prompt rows into a pool; rows already there (same id) are left alone."""
        before = self.count("prompts")
        values = [dict(id=r.id, source=r.source, task=r.task, pool=pool, input=r.input, choices=to_json(r.choices),
                       gold=r.gold, rationale=r.rationale, split=r.split, meta=to_json(r.meta), run_id=run_id)
                  for r in rows]
        if values:
            with self.transaction():  # one Arrow batch: 3,000 rows took 6 s row by row
                self._insert("prompts", values, or_ignore=True)
        return self.count("prompts") - before

    def prompts(self, pool: str, split: str | None = None, limit: int | None = None) -> list[PromptRow]:
        sql = "SELECT * FROM prompts WHERE pool = ?" + (" AND split = ?" if split else "")
        sql += " ORDER BY id" + (f" LIMIT {int(limit)}" if limit else "")
        rows = self._dicts(sql, [pool, split] if split else [pool])
        return [PromptRow(id=r["id"], source=r["source"], task=r["task"], input=r["input"],
                          gold=r["gold"], split=r["split"], rationale=r["rationale"],
                          choices=json.loads(r["choices"]) if r["choices"] else None,
                          meta=json.loads(r["meta"]) if r["meta"] else {}) for r in rows]

    def add_template(self, name: str, text: str, template_hash: str) -> None:
        self.con.execute("INSERT OR IGNORE INTO templates VALUES (?, ?, ?)", [template_hash, name, text])

    # -- requests and samples -----------------------------------------------------------
    def finished_requests(self, keys: list[str]) -> dict[str, dict]:
        """The requests among `keys` that finished with a response (the cache behind resume).

        Requests that failed in transport (status 'error') are not returned, so a re-run retries them.
        """
        if not keys:
            return {}
        # One list parameter, not executemany: 10,000 keys took 1.8 s row by row, 10 ms this way.
        rows = self._dicts("SELECT r.* FROM requests r WHERE r.status = 'done' AND r.key IN (SELECT unnest(?::VARCHAR[]))",
                           [keys])
        return {r["key"]: r for r in rows}

    def request_rows(self, keys: list[str]) -> list[dict]:
        """Every stored row among `keys`, done or failed (a shard's output, read by its coordinator)."""
        if not keys:
            return []
        return self._dicts("SELECT * FROM requests WHERE key IN (SELECT unnest(?::VARCHAR[])) ORDER BY key", [keys])

    def add_requests_and_samples(self, requests: list[dict], samples: list[dict]) -> None:
        """Write a finished batch in one transaction: a kill -9 keeps all of it or none."""
        with self.transaction():
            self._insert("requests", requests, or_replace=True)
            self._insert("samples", samples, or_replace=True)

    def samples(self, kind: str | None = None, pool: str | None = None) -> list[dict]:
        sql = ("SELECT s.*, p.split, p.gold, p.choices, p.input, p.pool FROM samples s "
               "JOIN prompts p ON p.id = s.prompt_id WHERE 1=1")
        args: list = []
        if kind:
            sql, args = sql + " AND s.kind = ?", args + [kind]
        if pool:
            sql, args = sql + " AND p.pool = ?", args + [pool]
        return self._dicts(sql + " ORDER BY s.id", args)

    def submitted_requests(self, model: str, batch_id: str | None = None) -> list[dict]:
        """A model's requests sent in a provider batch and not yet collected (oldest first)."""
        sql = ("SELECT key, model, prompt_id, template_hash, params, params_hash, sample_index, purpose, rendered, "
               "extra, run_id FROM requests WHERE model = ? AND status = 'submitted'")
        args = [model]
        if batch_id is not None:
            sql, args = sql + " AND extra->>'batch_id' = ?", args + [batch_id]
        return self._dicts(sql + " ORDER BY created_at, key", args)

    def token_totals(self, run_id: str | None = None) -> dict[str, dict]:
        sql = ("SELECT model, count(*) AS n, sum(prompt_tokens) AS prompt_tokens, "
               "sum(completion_tokens) AS completion_tokens, sum(cost_usd) AS cost_usd FROM requests"
               + (" WHERE run_id = ?" if run_id else "") + " GROUP BY model ORDER BY model")
        return {r["model"]: r for r in self._dicts(sql, [run_id] if run_id else [])}

    # -- evals --------------------------------------------------------------------------
    def add_eval(self, eval_id: str, run_id: str, task: str, split: str, config: dict,
                 metrics: dict, report_path: str, predictions: list[dict]) -> None:
        with self.transaction():
            self.con.execute("INSERT OR REPLACE INTO evals (id, run_id, task, split, config, metrics, "
                             "report_path) VALUES (?,?,?,?,?,?,?)",
                             [eval_id, run_id, task, split, to_json(config), to_json(metrics), report_path])
            self.con.execute("DELETE FROM eval_predictions WHERE eval_id = ?", [eval_id])
            self._insert("eval_predictions", predictions)

    def eval_list(self) -> list[dict]:
        return self._dicts("SELECT id, task, report_path FROM evals ORDER BY created_at")

    def counts_by(self, table: str, column: str, extra: str = "") -> dict[str, dict]:
        """Row counts grouped by one column (kind of sample, pair strategy, ...), for summaries."""
        rows = self._dicts(f"SELECT {column} AS k, count(*) AS n {extra} FROM {table} GROUP BY 1 ORDER BY 1")
        return {r.pop("k"): r for r in rows}

    # -- helpers ------------------------------------------------------------------------
    def count(self, table: str, where: str = "", args: list | None = None) -> int:
        return self.con.execute(f"SELECT count(*) FROM {table} " + (f"WHERE {where}" if where else ""),
                                args or []).fetchone()[0]

    def query(self, sql: str, args: list | None = None) -> list[dict]:
        """Read-only escape hatch for reports and tests."""
        return self._dicts(sql, args or [])

    def _dicts(self, sql: str, args: list | None = None) -> list[dict]:
        cur = self.con.execute(sql, args or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def _insert(self, table: str, rows: list[dict], or_replace: bool = False, or_ignore: bool = False) -> None:
        if not rows:
            return
        cols = list(rows[0])
        verb = "INSERT OR REPLACE" if or_replace else "INSERT OR IGNORE" if or_ignore else "INSERT"
        names = ", ".join(cols)
        values = [[to_json(r[c]) if isinstance(r[c], (dict, list)) else r[c] for c in cols] for r in rows]
        if len(rows) > 1:
            # executemany runs one statement per row (about 3 ms each for `requests`); one Arrow
            # batch inserts 64 rows in about 10 ms. Columns Arrow cannot type go row by row.
            try:
                arrow_rows = pa.table({c: [v[i] for v in values] for i, c in enumerate(cols)})
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                arrow_rows = None
            if arrow_rows is not None:
                # DuckDB reads the local `arrow_rows` by name (a replacement scan).
                self.con.execute(f"{verb} INTO {table} ({names}) SELECT {names} FROM arrow_rows")
                return
        self.con.executemany(f"{verb} INTO {table} ({names}) VALUES ({', '.join('?' * len(cols))})", values)


class _Transaction:
    """BEGIN/COMMIT around a block, ROLLBACK on any error, so bad input leaves no trace."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con

    def __enter__(self) -> None:
        self.con.execute("BEGIN TRANSACTION")

    def __exit__(self, exc_type, *rest: object) -> None:
        self.con.execute("ROLLBACK" if exc_type else "COMMIT")
