"""Read-only queries of `distill view` (view/), plus one synthetic-pool filler for its load measurement.

Part of the store (store/store.py owns the SQL); a mixin only so each file stays small. Every
method here reads, except `add_synthetic_pool`, which the viewer never calls (tests and the load
measurement build a large store with it). `self._dicts` comes from `Store`.
"""
from __future__ import annotations

from dataclasses import dataclass

# What a pool page's filters accept; anything else is refused by view/ before a query runs.
OUTCOMES = ("passed", "failed", "unverified")
YES_NO = ("yes", "no")
DEDUP_STATES = ("kept", "dropped")
PURIFIED_STATES = ("picked", "not_picked")


@dataclass(frozen=True)
class PromptFilters:
    """A pool page's filters. Sample filters hold for one and the same sample of the prompt;
    `search` matches the prompt's text (input, gold, rationale) or any of its samples' text."""

    split: str | None = None
    teacher: str | None = None
    kind: str | None = None
    outcome: str | None = None  # of `verifier`: passed | failed | unverified
    verifier: str = "answer_match"
    contaminated: str | None = None  # yes | no (the "decontam" verdict)
    dedup: str | None = None  # kept (by every method that saw it) | dropped (by any)
    purified: str | None = None  # picked | not_picked (by any purification method)
    search: str | None = None

    def sample_clauses(self) -> tuple[list[str], list]:
        """SQL conditions on a sample `s`, with their parameters (fixed SQL, values as parameters)."""
        where: list[str] = []
        args: list = []
        if self.teacher:
            where, args = where + ["s.teacher = ?"], args + [self.teacher]
        if self.kind:
            where, args = where + ["s.kind = ?"], args + [self.kind]
        verdict = "SELECT 1 FROM verdicts v WHERE v.sample_id = s.id AND v.verifier = ?"
        if self.outcome == "passed":
            where, args = where + [f"EXISTS ({verdict} AND v.passed)"], args + [self.verifier]
        elif self.outcome == "failed":
            where, args = where + [f"EXISTS ({verdict} AND NOT v.passed)"], args + [self.verifier]
        elif self.outcome == "unverified":
            where, args = where + [f"NOT EXISTS ({verdict})"], args + [self.verifier]
        dirty = "SELECT 1 FROM verdicts v WHERE v.sample_id = s.id AND v.verifier = 'decontam' AND NOT v.passed"
        if self.contaminated:
            where.append(f"EXISTS ({dirty})" if self.contaminated == "yes" else f"NOT EXISTS ({dirty})")
        dropped = "SELECT 1 FROM dedup d WHERE d.sample_id = s.id AND NOT d.keep"
        if self.dedup == "dropped":
            where.append(f"EXISTS ({dropped})")
        elif self.dedup == "kept":
            where.append(f"EXISTS (SELECT 1 FROM dedup d WHERE d.sample_id = s.id) AND NOT EXISTS ({dropped})")
        picked = "SELECT 1 FROM purified u WHERE u.sample_id = s.id"
        if self.purified:
            where.append(f"EXISTS ({picked})" if self.purified == "picked" else f"NOT EXISTS ({picked})")
        return where, args


class ViewQueries:
    # -- runs ----------------------------------------------------------------------------
    def view_runs(self, limit: int, offset: int, stage: str | None = None) -> tuple[list[dict], int]:
        """A page of runs, newest first, and how many there are."""
        rows = self._dicts("SELECT *, count(*) OVER () AS total FROM runs WHERE (? IS NULL OR stage = ?) "
                           "ORDER BY started_at DESC, id LIMIT ? OFFSET ?", [stage, stage, limit, offset])
        return rows, (rows[0]["total"] if rows else self.view_count_runs(stage))

    def view_count_runs(self, stage: str | None = None) -> int:
        return self._dicts("SELECT count(*) AS n FROM runs WHERE (? IS NULL OR stage = ?)", [stage, stage])[0]["n"]

    def view_run_stages(self) -> list[str]:
        return [r["stage"] for r in self._dicts("SELECT DISTINCT stage FROM runs ORDER BY 1")]

    def view_run(self, run_id: str) -> dict | None:
        rows = self._dicts("SELECT * FROM runs WHERE id = ?", [run_id])
        return rows[0] if rows else None

    def view_run_requests(self, run_ids: list[str]) -> list[dict]:
        """Per run, model, status and error class: requests, tokens, cost, and when the first and last
        were written (a running run's live progress; finished runs also have their summary)."""
        return self._dicts("""
            SELECT run_id, model, status, split_part(coalesce(error, ''), ':', 1) AS error_class, count(*) AS n,
                   coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
                   coalesce(sum(completion_tokens), 0) AS completion_tokens,
                   coalesce(sum(cost_usd), 0) AS cost_usd, min(created_at) AS first_at, max(created_at) AS last_at
            FROM requests WHERE run_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY ALL ORDER BY ALL""", [run_ids])

    def view_run_recent(self, run_id: str, seconds: int = 60) -> int:
        """Requests of a run written in the `seconds` before its latest one (the current rate)."""
        return self._dicts("""
            WITH r AS (SELECT created_at FROM requests WHERE run_id = ?)
            SELECT count(*) AS n FROM r WHERE created_at > (SELECT max(created_at) FROM r) - to_seconds(?)""",
                           [run_id, seconds])[0]["n"]

    def view_run_cache_hits(self, run_id: str) -> dict[str, int]:
        """Per model, the requests this run found finished (none recorded in a store older than the table)."""
        if not self._dicts("SELECT 1 FROM information_schema.tables WHERE table_name = 'cache_hits'"):
            return {}
        return {r["model"]: int(r["hits"]) for r in
                self._dicts("SELECT model, hits FROM cache_hits WHERE run_id = ? ORDER BY model", [run_id])}

    def view_run_samples(self, run_id: str) -> int:
        return self._dicts("SELECT count(*) AS n FROM samples WHERE run_id = ?", [run_id])[0]["n"]

    # -- pools and prompts ------------------------------------------------------------------
    def view_pools(self) -> list[dict]:
        return self._dicts("""
            SELECT p.pool, count(*) AS prompts, count(*) FILTER (WHERE p.split = 'train') AS train,
                   count(*) FILTER (WHERE p.split = 'calibration') AS calibration,
                   count(*) FILTER (WHERE p.split = 'test') AS test,
                   (SELECT count(*) FROM samples s JOIN prompts q ON q.id = s.prompt_id WHERE q.pool = p.pool) AS samples
            FROM prompts p GROUP BY p.pool ORDER BY p.pool""")

    def view_pool_facets(self, pool: str) -> dict[str, list[str]]:
        """The values a pool page's filter menus offer."""
        rows = self._dicts("""
            SELECT DISTINCT 'teacher' AS facet, s.teacher AS value FROM samples s JOIN prompts p ON p.id = s.prompt_id
            WHERE p.pool = ?
            UNION SELECT DISTINCT 'kind', s.kind FROM samples s JOIN prompts p ON p.id = s.prompt_id WHERE p.pool = ?
            UNION SELECT DISTINCT 'split', split FROM prompts WHERE pool = ?
            UNION SELECT DISTINCT 'verifier', verifier FROM verdicts WHERE verifier NOT LIKE 'judge%'
            ORDER BY 1, 2""", [pool, pool, pool])
        out: dict[str, list[str]] = {"teacher": [], "kind": [], "split": [], "verifier": []}
        for r in rows:
            out[r["facet"]].append(r["value"])
        return out

    def view_pool_prompts(self, pool: str, filters: PromptFilters, limit: int,
                          offset: int) -> tuple[list[dict], int]:
        """A page of a pool's prompts that pass the filters (by id), and how many pass."""
        where, args = ["p.pool = ?"], [pool]
        if filters.split:
            where, args = where + ["p.split = ?"], args + [filters.split]
        clauses, sample_args = filters.sample_clauses()
        if clauses:
            where.append("EXISTS (SELECT 1 FROM samples s WHERE s.prompt_id = p.id AND " + " AND ".join(clauses) + ")")
            args += sample_args
        if filters.search:
            needle = filters.search.lower()
            # contains() takes the text literally: no LIKE wildcards to escape.
            where.append("(contains(lower(p.input), ?) OR contains(lower(coalesce(p.gold, '')), ?) "
                         "OR contains(lower(coalesce(p.rationale, '')), ?) OR EXISTS (SELECT 1 FROM samples s "
                         "WHERE s.prompt_id = p.id AND (contains(lower(coalesce(s.reasoning, '')), ?) "
                         "OR contains(lower(coalesce(s.answer, '')), ?))))")
            args += [needle] * 5
        rows = self._dicts(f"""
            SELECT p.id, p.split, left(p.input, 240) AS input, left(p.gold, 80) AS gold, count(*) OVER () AS total
            FROM prompts p WHERE {' AND '.join(where)} ORDER BY p.id LIMIT ? OFFSET ?""", args + [limit, offset])
        if not rows and offset:
            total = self._dicts(f"SELECT count(*) AS n FROM prompts p WHERE {' AND '.join(where)}", args)[0]["n"]
        else:
            total = rows[0]["total"] if rows else 0
        return rows, total

    def view_prompt_tallies(self, prompt_ids: list[str], verifier: str = "answer_match") -> dict[str, dict]:
        """Per prompt: samples, teachers, samples passing / failing `verifier`, dropped by dedup, contaminated."""
        rows = self._dicts("""
            WITH s AS (SELECT * FROM samples WHERE prompt_id IN (SELECT unnest(?::VARCHAR[]))),
                 v AS (SELECT sample_id, bool_or(passed) FILTER (WHERE verifier = ?) AS passed,
                              bool_or(NOT passed) FILTER (WHERE verifier = 'decontam') AS dirty
                       FROM verdicts WHERE sample_id IN (SELECT id FROM s) GROUP BY 1),
                 d AS (SELECT sample_id, bool_or(NOT keep) AS dropped FROM dedup
                       WHERE sample_id IN (SELECT id FROM s) GROUP BY 1)
            SELECT s.prompt_id, count(*) AS samples, list(DISTINCT s.teacher ORDER BY s.teacher) AS teachers,
                   count(*) FILTER (WHERE v.passed) AS passed, count(*) FILTER (WHERE NOT v.passed) AS failed,
                   count(*) FILTER (WHERE d.dropped) AS dropped, count(*) FILTER (WHERE v.dirty) AS contaminated
            FROM s LEFT JOIN v ON v.sample_id = s.id LEFT JOIN d ON d.sample_id = s.id GROUP BY 1""",
                           [prompt_ids, verifier])
        return {r.pop("prompt_id"): r for r in rows}

    def view_prompt(self, prompt_id: str) -> dict | None:
        rows = self._dicts("SELECT * FROM prompts WHERE id = ?", [prompt_id])
        return rows[0] if rows else None

    def view_prompt_samples(self, prompt_id: str) -> list[dict]:
        """Every sample of a prompt with what its request recorded (a tool step's observation is in `extra`)."""
        return self._dicts("""
            SELECT s.*, r.model, r.status AS request_status, r.finish_reason, r.prompt_tokens, r.completion_tokens,
                   r.cost_usd, r.latency_s, r.error AS request_error, r.extra, r.purpose, r.created_at
            FROM samples s LEFT JOIN requests r ON r.key = s.request_key
            WHERE s.prompt_id = ? ORDER BY s.teacher, s.kind, r.created_at, s.id""", [prompt_id])

    def view_verdicts(self, sample_ids: list[str]) -> list[dict]:
        return self._dicts("SELECT * FROM verdicts WHERE sample_id IN (SELECT unnest(?::VARCHAR[])) "
                           "ORDER BY sample_id, verifier, verifier_version", [sample_ids])

    def view_dedup(self, sample_ids: list[str]) -> list[dict]:
        """Dedup rows of these samples, with the size of each one's cluster."""
        return self._dicts("""
            WITH mine AS (SELECT * FROM dedup WHERE sample_id IN (SELECT unnest(?::VARCHAR[])))
            SELECT m.*, (SELECT count(*) FROM dedup d WHERE d.method = m.method AND d.cluster_id = m.cluster_id)
                   AS size
            FROM mine m ORDER BY m.sample_id, m.method""", [sample_ids])

    def view_purified(self, prompt_id: str) -> list[dict]:
        return self._dicts("SELECT * FROM purified WHERE prompt_id = ? ORDER BY method", [prompt_id])

    # -- dedup clusters and pairs --------------------------------------------------------------
    def view_cluster(self, method: str, cluster_id: str, verifier: str = "answer_match") -> list[dict]:
        """A cluster's members with what ranks them (curation.dedup.best_first): verdict, judge score, text."""
        return self._dicts("""
            SELECT s.id, s.prompt_id, s.teacher, s.kind, s.reasoning, s.answer, d.keep, d.params, d.run_id,
                   (SELECT bool_or(v.passed) FROM verdicts v WHERE v.sample_id = s.id AND v.verifier = ?) AS passed,
                   (SELECT avg(v.score) FROM verdicts v WHERE v.sample_id = s.id
                     AND starts_with(v.verifier, 'judge')) AS judge_score
            FROM dedup d JOIN samples s ON s.id = d.sample_id
            WHERE d.method = ? AND d.cluster_id = ? ORDER BY d.keep DESC, s.id""", [verifier, method, cluster_id])

    def view_pairs(self, pool: str | None, strategy: str | None, limit: int,
                   offset: int) -> tuple[list[dict], int]:
        """A page of preference pairs with both samples' texts, and how many match."""
        rows = self._dicts("""
            SELECT x.id, x.strategy, x.margin, x.run_id, p.id AS prompt_id, p.pool, p.split, left(p.input, 300) AS input,
                   c.id AS chosen_id, c.teacher AS chosen_teacher, c.reasoning AS chosen_reasoning,
                   c.answer AS chosen_answer, r.id AS rejected_id, r.teacher AS rejected_teacher,
                   r.reasoning AS rejected_reasoning, r.answer AS rejected_answer, count(*) OVER () AS total
            FROM pairs x JOIN prompts p ON p.id = x.prompt_id
            LEFT JOIN samples c ON c.id = x.chosen_sample_id LEFT JOIN samples r ON r.id = x.rejected_sample_id
            WHERE (? IS NULL OR p.pool = ?) AND (? IS NULL OR x.strategy = ?)
            ORDER BY x.strategy, p.id, x.id LIMIT ? OFFSET ?""", [pool, pool, strategy, strategy, limit, offset])
        return rows, (rows[0]["total"] if rows else 0)

    def view_pair_facets(self) -> dict[str, list[str]]:
        rows = self._dicts("SELECT DISTINCT 'strategy' AS facet, strategy AS value FROM pairs UNION "
                           "SELECT DISTINCT 'pool', p.pool FROM pairs x JOIN prompts p ON p.id = x.prompt_id ORDER BY 1, 2")
        out: dict[str, list[str]] = {"strategy": [], "pool": []}
        for r in rows:
            out[r["facet"]].append(r["value"])
        return out

    # -- evaluations -----------------------------------------------------------------------------
    def view_evals(self) -> list[dict]:
        return self._dicts("SELECT id, run_id, task, split, config, report_path, created_at FROM evals "
                           "ORDER BY created_at DESC, id")

    def view_eval(self, eval_id: str) -> dict | None:
        rows = self._dicts("SELECT * FROM evals WHERE id = ?", [eval_id])
        return rows[0] if rows else None

    def view_eval_predictions(self, eval_id: str, models: list[str]) -> list[dict]:
        """The stored per-query rows of an eval for these models, with the human label."""
        return self._dicts("""
            SELECT e.model, e.prompt_id, e.split, e.answer, e.correct, e.confidence, e.tokens,
                   p.gold, left(p.input, 240) AS input
            FROM eval_predictions e LEFT JOIN prompts p ON p.id = e.prompt_id
            WHERE e.eval_id = ? AND e.model IN (SELECT unnest(?::VARCHAR[])) ORDER BY e.prompt_id, e.model""",
                           [eval_id, models])

    # -- synthetic rows (tests and the load measurement; the viewer never writes) -------------------
    def add_synthetic_pool(self, pool: str, prompts: int, samples_per_prompt: int,
                           teachers: tuple[str, ...] = ("teacher-a", "teacher-b")) -> int:
        """`prompts` prompts x `samples_per_prompt` cot samples (teachers in turn), each with a request
        and an answer_match verdict, every 7th prompt's first two samples an exact-dedup cluster: built
        inside DuckDB (INSERT ... SELECT over range()), so a million samples take seconds. Returns samples."""
        k, n_teachers = samples_per_prompt, len(teachers)
        with self.transaction():
            self.con.execute("""
                INSERT INTO prompts (id, source, task, pool, input, gold, rationale, split, choices, meta)
                SELECT ? || '-p' || lpad(i::VARCHAR, 9, '0'), 'synthetic', 'synthetic', ?,
                       'Synthetic question ' || i || ': what is ' || i || ' plus ' || (i % 97) || '?',
                       (i + i % 97)::VARCHAR, 'Add the two numbers.',
                       CASE WHEN i % 5 = 0 THEN 'test' WHEN i % 5 = 1 THEN 'calibration' ELSE 'train' END, NULL, NULL
                FROM range(?) t(i)""", [pool, pool, prompts])
            self.con.execute("""
                INSERT INTO requests (key, model, prompt_id, sample_index, purpose, status, response, prompt_tokens,
                                      completion_tokens, cost_usd, latency_s, finish_reason, run_id)
                SELECT ? || '-k' || lpad(j::VARCHAR, 10, '0'), (?::VARCHAR[])[1 + j % ?],
                       ? || '-p' || lpad((j // ?)::VARCHAR, 9, '0'), j % ?, 'cot', 'done', 'synthetic', 40, 20,
                       0.0, 0.01, 'stop', NULL
                FROM range(?) t(j)""", [pool, list(teachers), n_teachers, pool, k, k, prompts * k])
            self.con.execute("""
                INSERT INTO samples (id, prompt_id, request_key, teacher, kind, reasoning, answer, parse_error)
                SELECT ? || '-s' || lpad(j::VARCHAR, 10, '0'), ? || '-p' || lpad((j // ?)::VARCHAR, 9, '0'),
                       ? || '-k' || lpad(j::VARCHAR, 10, '0'), (?::VARCHAR[])[1 + j % ?], 'cot',
                       'Step one: take ' || (j // ?) || '. Step two: add ' || ((j // ?) % 97) || '.',
                       CASE WHEN j % 3 = 0 THEN 'wrong' ELSE ((j // ?) + (j // ?) % 97)::VARCHAR END, NULL
                FROM range(?) t(j)""", [pool, pool, k, pool, list(teachers), n_teachers, k, k, k, k, prompts * k])
            self.con.execute("""
                INSERT INTO verdicts (sample_id, verifier, verifier_version, passed, score, detail)
                SELECT ? || '-s' || lpad(j::VARCHAR, 10, '0'), 'answer_match', '2', j % 3 <> 0,
                       CASE WHEN j % 3 = 0 THEN 0.0 ELSE 1.0 END, 'synthetic'
                FROM range(?) t(j)""", [pool, prompts * k])
            self.con.execute("""
                INSERT INTO dedup (sample_id, method, cluster_id, keep, params)
                SELECT ? || '-s' || lpad((i * ? + m)::VARCHAR, 10, '0'), 'exact',
                       ? || '-c' || lpad(i::VARCHAR, 9, '0'), m = 1, '{}'
                FROM range(0, ?, 7) t(i), range(2) u(m)""", [pool, k, pool, prompts if k >= 2 else 0])
        return prompts * k
