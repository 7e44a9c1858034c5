"""Store queries of the curation stages: verdicts, dedup, purification, pairs, exports.

Part of the store (curation/store.py owns the SQL); a mixin only so each file stays small.
`self.con`, `self._dicts`, `self._insert` and `self.transaction` come from `Store`.
"""
from __future__ import annotations

import json
from typing import Any


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


class CurationQueries:
    # -- curation results ---------------------------------------------------------------
    def verified_keys(self, verifier: str, version: str) -> set[str]:
        rows = self.con.execute("SELECT sample_id FROM verdicts WHERE verifier = ? AND verifier_version = ?",
                                [verifier, version]).fetchall()
        return {r[0] for r in rows}

    def add_verdicts(self, rows: list[dict]) -> None:
        with self.transaction():
            self._insert("verdicts", rows, or_replace=True)

    def replace_dedup(self, method: str, rows: list[dict]) -> None:
        with self.transaction():
            self.con.execute("DELETE FROM dedup WHERE method = ?", [method])
            self._insert("dedup", rows)

    def replace_purified(self, method: str, rows: list[dict]) -> None:
        with self.transaction():
            self.con.execute("DELETE FROM purified WHERE method = ?", [method])
            self._insert("purified", rows)

    def curated_samples(self, pool: str, verifier: str) -> list[dict]:
        """Samples of a pool with their verdict and whether every dedup method kept them."""
        return self._dicts("""
            SELECT s.*, p.split, p.input, p.choices, r.completion_tokens, v.passed, v.score,
                   coalesce(bool_and(d.keep), TRUE) AS kept
            FROM samples s JOIN prompts p ON p.id = s.prompt_id
            JOIN requests r ON r.key = s.request_key
            LEFT JOIN verdicts v ON v.sample_id = s.id AND v.verifier = ?
            LEFT JOIN dedup d ON d.sample_id = s.id
            WHERE p.pool = ? AND s.kind = 'cot'
            GROUP BY ALL ORDER BY s.id""", [verifier, pool])

    def replace_pairs(self, strategy: str, pool: str, rows: list[dict]) -> None:
        with self.transaction():
            self.con.execute("DELETE FROM pairs WHERE strategy = ? AND prompt_id IN "
                             "(SELECT id FROM prompts WHERE pool = ?)", [strategy, pool])
            self._insert("pairs", rows)

    def pairs_for_export(self, pool: str, strategy: str) -> list[dict]:
        """Pairs with both texts, train split only: test rows never reach training."""
        return self._dicts("""
            SELECT x.id, x.margin, p.id AS prompt_id, p.input, p.choices, p.split,
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

    def train_samples_of_kind(self, pool: str, kind: str) -> list[dict]:
        return self._dicts("SELECT s.*, p.input, p.gold, p.choices FROM samples s JOIN prompts p ON p.id = s.prompt_id "
                           "WHERE p.pool = ? AND p.split = 'train' AND s.kind = ? ORDER BY s.id", [pool, kind])

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
                   s.teacher, s.reasoning, s.answer
            FROM purified u JOIN samples s ON s.id = u.sample_id JOIN prompts p ON p.id = u.prompt_id
            WHERE u.method = ? AND p.pool = ? AND p.split = 'train' ORDER BY p.id""", [method, pool])

