"""Store queries of the curation stages: verdicts, dedup, purification, pairs, exports.

Part of the store (store/store.py owns the SQL); a mixin only so each file stays small.
`self.con`, `self._dicts`, `self._insert` and `self.transaction` come from `Store`.
"""
from __future__ import annotations

import json
from typing import Any


def to_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


class CurationQueries:
    # -- curation results ---------------------------------------------------------------
    def verified_keys(self, verifier: str, version: str) -> set[str]:
        rows = self.con.execute("SELECT sample_id FROM verdicts WHERE verifier = ? AND verifier_version = ?",
                                [verifier, version]).fetchall()
        return {r[0] for r in rows}

    def samples_to_verify(self, pool: str, kinds: list[str], verifier: str, version: str) -> list[dict]:
        """Samples of the pool without a verdict of this verifier version, with what verifiers need."""
        return self._dicts("""
            SELECT s.*, p.input, p.gold, p.choices, p.meta, p.split, r.finish_reason, r.completion_tokens
            FROM samples s JOIN prompts p ON p.id = s.prompt_id LEFT JOIN requests r ON r.key = s.request_key
            WHERE p.pool = ? AND s.kind IN (SELECT unnest(?::VARCHAR[]))
              AND s.id NOT IN (SELECT sample_id FROM verdicts WHERE verifier = ? AND verifier_version = ?)
            ORDER BY s.id""", [pool, kinds, verifier, version])

    def held_out_texts(self, splits: list[str]) -> list[dict]:
        """Every prompt of the given splits, in any pool: what training data must not contain."""
        return self._dicts("SELECT id, input, rationale FROM prompts WHERE split IN (SELECT unnest(?::VARCHAR[])) "
                           "ORDER BY id", [splits])

    def add_verdicts(self, rows: list[dict]) -> None:
        with self.transaction():
            self._insert("verdicts", rows, or_replace=True)

    # -- dedup (callers wrap these in one transaction) -------------------------------------
    def dedup_samples_info(self, pool: str, kinds: list[str], verifier: str) -> list[dict]:
        """Samples to dedup with what ranks them: verdict, mean judge score, text."""
        return self._dicts("""
            SELECT s.id, s.prompt_id, s.teacher, s.kind, s.reasoning, s.answer, p.split,
                   bool_or(v.passed) FILTER (WHERE v.verifier = ?) AS passed,
                   avg(v.score) FILTER (WHERE starts_with(v.verifier, 'judge')) AS judge_score
            FROM samples s JOIN prompts p ON p.id = s.prompt_id
            LEFT JOIN verdicts v ON v.sample_id = s.id
            WHERE p.pool = ? AND s.kind IN (SELECT unnest(?::VARCHAR[]))
            GROUP BY ALL ORDER BY s.id""", [verifier, pool, kinds])

    def dedup_indexed_ids(self, params_hash: str) -> set[str]:
        rows = self.con.execute("SELECT sample_id FROM dedup_index WHERE params_hash = ?", [params_hash]).fetchall()
        return {r[0] for r in rows}

    def add_dedup_index(self, params_hash: str, params: dict, index_rows: list[dict], band_rows: dict) -> None:
        import pyarrow as pa

        self.con.execute("INSERT OR IGNORE INTO dedup_params VALUES (?, ?)", [params_hash, to_json(params)])
        self._insert("dedup_index", index_rows)
        n = len(band_rows["sample_id"])
        # `bands` is read by name in the SQL below (a DuckDB replacement scan).
        bands = pa.table({"params_hash": pa.array([band_rows["params_hash"]] * n),  # noqa: F841
                          "scope": pa.array(band_rows["scope"]), "band": pa.array(band_rows["band"], pa.int16()),
                          "band_hash": pa.array(band_rows["band_hash"], pa.uint64()),
                          "sample_id": pa.array(band_rows["sample_id"])})
        self.con.execute("INSERT INTO dedup_bands SELECT * FROM bands")

    def dedup_exact_pairs(self, params_hash: str, new_ids: list[str]) -> list[tuple[str, str]]:
        """(new sample, other sample) with the same normalised-text hash in the same scope."""
        return self.con.execute("""
            SELECT a.sample_id, b.sample_id FROM dedup_index a JOIN dedup_index b
              ON b.params_hash = a.params_hash AND b.scope = a.scope AND b.text_hash = a.text_hash
             AND b.sample_id <> a.sample_id
            WHERE a.params_hash = ? AND a.sample_id IN (SELECT unnest(?::VARCHAR[]))""",
                                [params_hash, new_ids]).fetchall()

    def dedup_band_pairs(self, params_hash: str, new_ids: list[str]) -> list[tuple[str, str]]:
        """(new sample, other sample) sharing at least one LSH band hash in the same scope."""
        return self.con.execute("""
            SELECT DISTINCT a.sample_id, b.sample_id FROM dedup_bands a JOIN dedup_bands b
              ON b.params_hash = a.params_hash AND b.band = a.band AND b.band_hash = a.band_hash
             AND b.scope = a.scope AND b.sample_id <> a.sample_id
            WHERE a.params_hash = ? AND a.sample_id IN (SELECT unnest(?::VARCHAR[]))""",
                                [params_hash, new_ids]).fetchall()

    def dedup_signatures(self, params_hash: str, ids: list[str]) -> dict[str, bytes]:
        rows = self.con.execute("SELECT sample_id, signature FROM dedup_index WHERE params_hash = ? "
                                "AND sample_id IN (SELECT unnest(?::VARCHAR[]))", [params_hash, ids]).fetchall()
        return {r[0]: r[1] for r in rows}

    def dedup_clusters(self, method: str, pool: str) -> dict[str, str]:
        """sample id -> cluster id of one dedup method in a pool."""
        rows = self.con.execute("SELECT d.sample_id, d.cluster_id FROM dedup d JOIN samples s ON s.id = d.sample_id "
                                "JOIN prompts p ON p.id = s.prompt_id WHERE d.method = ? AND p.pool = ?",
                                [method, pool]).fetchall()
        return dict(rows)

    def upsert_dedup(self, rows: list[dict]) -> None:
        self._insert("dedup", rows, or_replace=True)

    def dedup_dropped(self, pool: str) -> dict[str, int]:
        """Samples not kept, per dedup method, in a pool."""
        rows = self.con.execute("SELECT d.method, count(*) FILTER (WHERE NOT d.keep) FROM dedup d "
                                "JOIN samples s ON s.id = d.sample_id JOIN prompts p ON p.id = s.prompt_id "
                                "WHERE p.pool = ? GROUP BY 1", [pool]).fetchall()
        return dict(rows)

    def replace_purified(self, method: str, rows: list[dict], prompt_ids: list[str]) -> None:
        """Replace one method's rows for these prompts (other pools and splits keep theirs)."""
        with self.transaction():
            self.con.execute("DELETE FROM purified WHERE method = ? AND prompt_id IN (SELECT unnest(?::VARCHAR[]))",
                             [method, prompt_ids])
            self._insert("purified", rows)

    def curated_samples(self, pool: str, verifier: str, kinds: list[str] | None = None) -> list[dict]:
        """Samples of a pool with their verdict, mean judge score and whether every dedup method kept them."""
        return self._dicts("""
            WITH v AS (SELECT sample_id, bool_or(passed) FILTER (WHERE verifier = ?) AS passed,
                              avg(score) FILTER (WHERE starts_with(verifier, 'judge')) AS judge_score
                       FROM verdicts GROUP BY 1),
                 d AS (SELECT sample_id, bool_and(keep) AS kept FROM dedup GROUP BY 1)
            SELECT s.*, p.split, p.input, p.choices, r.completion_tokens, r.params AS request_params, v.passed, v.judge_score,
                   coalesce(d.kept, TRUE) AS kept
            FROM samples s JOIN prompts p ON p.id = s.prompt_id
            JOIN requests r ON r.key = s.request_key
            LEFT JOIN v ON v.sample_id = s.id LEFT JOIN d ON d.sample_id = s.id
            WHERE p.pool = ? AND s.kind IN (SELECT unnest(?::VARCHAR[]))
            ORDER BY s.id""", [verifier, pool, kinds or ["cot"]])

    def replace_pairs(self, strategy: str, pool: str, rows: list[dict]) -> None:
        with self.transaction():
            self.con.execute("DELETE FROM pairs WHERE strategy = ? AND prompt_id IN "
                             "(SELECT id FROM prompts WHERE pool = ?)", [strategy, pool])
            self._insert("pairs", rows)

    def pairs_for_export(self, pool: str, strategy: str) -> list[dict]:
        """Pairs with both texts, train split only: test rows never reach training."""
        return self._dicts("""
            SELECT x.id, x.margin, p.id AS prompt_id, p.input, p.choices, p.split,
                   c.id AS chosen_sample_id, r.id AS rejected_sample_id,
                   c.reasoning AS chosen_reasoning, c.answer AS chosen_answer, c.teacher AS chosen_teacher,
                   r.reasoning AS rejected_reasoning, r.answer AS rejected_answer, r.teacher AS rejected_teacher
            FROM pairs x JOIN prompts p ON p.id = x.prompt_id
            JOIN samples c ON c.id = x.chosen_sample_id JOIN samples r ON r.id = x.rejected_sample_id
            WHERE x.strategy = ? AND p.pool = ? AND p.split = 'train' ORDER BY x.id""", [strategy, pool])

    def scored_samples(self, pool: str, kinds: tuple[str, ...], verifier_prefix: str) -> list[dict]:
        """Samples of given kinds with their mean score over verdicts whose verifier starts with a prefix."""
        marks = ", ".join("?" * len(kinds))
        return self._dicts(f"""
            SELECT s.*, p.split, p.input, p.choices, p.gold, avg(v.score) AS score, bool_or(v.passed) AS passed
            FROM samples s JOIN prompts p ON p.id = s.prompt_id
            LEFT JOIN verdicts v ON v.sample_id = s.id AND starts_with(v.verifier, ?)
            WHERE p.pool = ? AND s.kind IN ({marks}) GROUP BY ALL ORDER BY s.id""",
            [verifier_prefix, pool, *kinds])

    def samples_by_id(self, ids: list[str]) -> dict[str, dict]:
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        rows = self._dicts(f"SELECT s.*, p.input, p.choices, p.gold, p.split FROM samples s "
                           f"JOIN prompts p ON p.id = s.prompt_id WHERE s.id IN ({marks})", ids)
        return {r["id"]: r for r in rows}

    def add_samples(self, rows: list[dict]) -> None:
        with self.transaction():
            self._insert("samples", rows, or_replace=True)

    def purified_traces(self, pool: str, method: str) -> list[dict]:
        """The selected trace per prompt, train split only: test rows never reach training."""
        return self._dicts("""
            SELECT p.id AS prompt_id, p.input, p.choices, p.split, s.id AS sample_id,
                   s.teacher, s.reasoning, s.answer, s.request_key
            FROM purified u JOIN samples s ON s.id = u.sample_id JOIN prompts p ON p.id = u.prompt_id
            WHERE u.method = ? AND p.pool = ? AND p.split = 'train' ORDER BY p.id""", [method, pool])

    def verified_samples_of_kind(self, pool: str, kind: str, verifier: str) -> list[dict]:
        """Train-split samples of a kind that passed a verifier."""
        return self._dicts("""
            SELECT s.*, p.input, p.gold, p.choices FROM samples s JOIN prompts p ON p.id = s.prompt_id
            WHERE p.pool = ? AND p.split = 'train' AND s.kind = ?
              AND s.id IN (SELECT sample_id FROM verdicts WHERE verifier = ? AND passed) ORDER BY s.id""",
                           [pool, kind, verifier])

    def failed_sample_ids(self, verifier: str, version: str) -> set[str]:
        rows = self.con.execute("SELECT sample_id FROM verdicts WHERE verifier = ? AND verifier_version = ? "
                                "AND NOT passed", [verifier, version]).fetchall()
        return {r[0] for r in rows}

    def verdict_counts(self, sample_ids: list[str]) -> dict[str, dict]:
        """verifier -> {"passed", "failed"} over the given samples (latest verdicts of any version)."""
        rows = self._dicts("""
            SELECT verifier, count(*) FILTER (WHERE passed) AS passed, count(*) FILTER (WHERE NOT passed) AS failed
            FROM verdicts WHERE sample_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY 1 ORDER BY 1""", [sample_ids])
        return {r.pop("verifier"): r for r in rows}

    # -- exports ------------------------------------------------------------------------
    def add_export(self, card: dict, run_id: str | None) -> None:
        self.con.execute("INSERT OR REPLACE INTO exports (id, kind, pool, path, format, rows, options, card, run_id) "
                         "VALUES (?,?,?,?,?,?,?,?,?)", [card["export_id"], card["kind"], card["pool"], card["path"],
                                                        card["format"], card["rows"], to_json(card["options"]),
                                                        to_json(card), run_id])

    # -- DataFrame views (curation.api) ---------------------------------------------------
    def frame_samples(self, pool: str):
        return self.con.execute("""
            SELECT s.id, s.prompt_id, p.split, s.teacher, s.kind, s.answer, s.parse_error, s.reasoning, s.run_id
            FROM samples s JOIN prompts p ON p.id = s.prompt_id WHERE p.pool = ? ORDER BY s.id""", [pool]).df()

    def frame_clusters(self, pool: str, method: str, duplicates_only: bool = True):
        return self.con.execute("""
            SELECT d.cluster_id, count(*) OVER (PARTITION BY d.cluster_id) AS size, d.keep, d.sample_id,
                   s.prompt_id, s.teacher, s.answer, s.reasoning, d.run_id
            FROM dedup d JOIN samples s ON s.id = d.sample_id JOIN prompts p ON p.id = s.prompt_id
            WHERE d.method = ? AND p.pool = ?
            QUALIFY NOT ? OR count(*) OVER (PARTITION BY d.cluster_id) > 1
            ORDER BY size DESC, d.cluster_id, d.keep DESC, d.sample_id""", [method, pool, duplicates_only]).df()

    def frame_verdicts(self, pool: str, verifier: str | None = None):
        return self.con.execute("""
            SELECT v.sample_id, s.prompt_id, p.split, s.teacher, v.verifier, v.verifier_version, v.passed,
                   v.score, v.detail, v.run_id
            FROM verdicts v JOIN samples s ON s.id = v.sample_id JOIN prompts p ON p.id = s.prompt_id
            WHERE p.pool = ? AND (? IS NULL OR v.verifier = ?) ORDER BY v.sample_id, v.verifier""",
                                [pool, verifier, verifier]).df()

    def frame_purified(self, pool: str, method: str):
        return self.con.execute("""
            SELECT u.prompt_id, p.split, u.method, u.sample_id, s.teacher, s.answer, p.gold, u.detail, u.run_id
            FROM purified u JOIN prompts p ON p.id = u.prompt_id JOIN samples s ON s.id = u.sample_id
            WHERE p.pool = ? AND u.method = ? ORDER BY u.prompt_id""", [pool, method]).df()

    def trace_funnel(self, pool: str, verifier: str, method: str) -> list[dict]:
        """Per teacher, the curation funnel of a pool's CoT traces: generated, unparsed, exact and
        near (MinHash beyond exact) duplicates dropped, verified, and picked by purification `method`."""
        return self._dicts("""
            WITH d AS (SELECT sample_id, bool_and(keep) FILTER (WHERE method = 'exact') AS exact_keep,
                              bool_and(keep) FILTER (WHERE method = 'minhash') AS near_keep
                       FROM dedup GROUP BY 1),
                 v AS (SELECT sample_id, bool_or(passed) AS passed FROM verdicts WHERE verifier = ? GROUP BY 1)
            SELECT s.teacher, count(*) AS generated,
                   count(*) FILTER (WHERE s.parse_error IS NOT NULL) AS unparsed,
                   count(*) FILTER (WHERE d.exact_keep = FALSE) AS exact_duplicates,
                   count(*) FILTER (WHERE d.near_keep = FALSE AND coalesce(d.exact_keep, TRUE)) AS near_duplicates,
                   count(*) FILTER (WHERE v.passed) AS verified,
                   count(u.sample_id) AS picked
            FROM samples s JOIN prompts p ON p.id = s.prompt_id
            LEFT JOIN d ON d.sample_id = s.id LEFT JOIN v ON v.sample_id = s.id
            LEFT JOIN purified u ON u.sample_id = s.id AND u.method = ?
            WHERE p.pool = ? AND s.kind = 'cot' GROUP BY 1 ORDER BY 1""", [verifier, method, pool])

    # -- offline logit KD targets (train/teacher_pass.py) ------------------------------------
    def teacher_logprob_keys(self, teacher: str, mode: str, k: int) -> set[str]:
        rows = self.con.execute("SELECT sample_id FROM teacher_logprobs WHERE teacher = ? AND mode = ? AND k = ?",
                                [teacher, mode, k]).fetchall()
        return {r[0] for r in rows}

    def add_teacher_logprobs(self, rows: list[dict]) -> None:
        with self.transaction():
            self._insert("teacher_logprobs", rows, or_replace=True)

    def teacher_logprobs(self, sample_ids: list[str], teacher: str, mode: str, k: int) -> dict[str, dict]:
        rows = self._dicts("SELECT * FROM teacher_logprobs WHERE teacher = ? AND mode = ? AND k = ? "
                           "AND sample_id IN (SELECT unnest(?::VARCHAR[]))", [teacher, mode, k, sample_ids])
        return {r["sample_id"]: r for r in rows}
