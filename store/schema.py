"""The store's schema: an ordered list of migrations, each a plain function of a connection.

Part of the store (store/store.py owns the SQL; this file holds its DDL). A migration is
never edited once released: add a new one at the end instead.
"""
from __future__ import annotations

from typing import Callable

import duckdb


def _m001_core(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
        CREATE TABLE runs (
            id VARCHAR PRIMARY KEY, stage VARCHAR NOT NULL, config JSON, git_sha VARCHAR,
            started_at TIMESTAMP DEFAULT current_timestamp, finished_at TIMESTAMP,
            status VARCHAR DEFAULT 'running', timings JSON)""")
    con.execute("""
        CREATE TABLE prompts (
            id VARCHAR PRIMARY KEY, source VARCHAR, task VARCHAR, pool VARCHAR NOT NULL,
            input VARCHAR NOT NULL, choices JSON, gold VARCHAR, rationale VARCHAR,
            split VARCHAR NOT NULL, meta JSON, run_id VARCHAR)""")
    con.execute("""
        CREATE TABLE templates (hash VARCHAR PRIMARY KEY, name VARCHAR, text VARCHAR)""")
    # A request is one paid (or slow) teacher call. Its key hashes model + rendered
    # messages + generation params + sample index, so a re-run finds finished calls.
    con.execute("""
        CREATE TABLE requests (
            key VARCHAR PRIMARY KEY, model VARCHAR NOT NULL, prompt_id VARCHAR,
            template_hash VARCHAR, params JSON, params_hash VARCHAR, sample_index INTEGER,
            purpose VARCHAR, rendered VARCHAR, status VARCHAR, response VARCHAR,
            prompt_tokens INTEGER, completion_tokens INTEGER, cost_usd DOUBLE,
            latency_s DOUBLE, finish_reason VARCHAR, error VARCHAR, extra JSON,
            run_id VARCHAR, created_at TIMESTAMP DEFAULT current_timestamp)""")
    con.execute("""
        CREATE TABLE samples (
            id VARCHAR PRIMARY KEY, prompt_id VARCHAR NOT NULL, request_key VARCHAR NOT NULL,
            teacher VARCHAR NOT NULL, kind VARCHAR NOT NULL, reasoning VARCHAR,
            answer VARCHAR, parse_error VARCHAR, parent_id VARCHAR, run_id VARCHAR)""")
    con.execute("""
        CREATE TABLE verdicts (
            sample_id VARCHAR, verifier VARCHAR, verifier_version VARCHAR, passed BOOLEAN,
            score DOUBLE, detail VARCHAR, run_id VARCHAR,
            PRIMARY KEY (sample_id, verifier, verifier_version))""")
    con.execute("""
        CREATE TABLE dedup (
            sample_id VARCHAR, method VARCHAR, cluster_id VARCHAR, keep BOOLEAN,
            params JSON, run_id VARCHAR, PRIMARY KEY (sample_id, method))""")
    con.execute("""
        CREATE TABLE purified (
            prompt_id VARCHAR, method VARCHAR, sample_id VARCHAR, detail JSON,
            run_id VARCHAR, PRIMARY KEY (prompt_id, method))""")
    con.execute("""
        CREATE TABLE pairs (
            id VARCHAR PRIMARY KEY, prompt_id VARCHAR, chosen_sample_id VARCHAR,
            rejected_sample_id VARCHAR, strategy VARCHAR, margin DOUBLE, run_id VARCHAR)""")
    con.execute("""
        CREATE TABLE evals (
            id VARCHAR PRIMARY KEY, run_id VARCHAR, task VARCHAR, split VARCHAR,
            config JSON, metrics JSON, report_path VARCHAR,
            created_at TIMESTAMP DEFAULT current_timestamp)""")
    # One row per (eval, model, prompt): what each model answered on the held-out split.
    con.execute("""
        CREATE TABLE eval_predictions (
            eval_id VARCHAR, model VARCHAR, prompt_id VARCHAR, split VARCHAR,
            request_key VARCHAR, answer VARCHAR, correct BOOLEAN, confidence DOUBLE,
            tokens INTEGER, PRIMARY KEY (eval_id, model, prompt_id))""")


def _m002_run_summary(con: duckdb.DuckDBPyConnection) -> None:
    # What a run did, per model: calls, tokens, cost, errors by class (filled by finish_run).
    con.execute("ALTER TABLE runs ADD COLUMN summary JSON")


def _m003_curation(con: duckdb.DuckDBPyConnection) -> None:
    # Dedup index: a sample's normalised-text hash and MinHash signature under one parameter
    # set, kept so that a later batch is checked against everything already indexed without
    # recomputing it. `scope` is what duplicates must share (the prompt id for traces).
    con.execute("""
        CREATE TABLE dedup_index (
            sample_id VARCHAR, params_hash VARCHAR, scope VARCHAR, text_hash VARCHAR,
            signature BLOB, run_id VARCHAR, PRIMARY KEY (sample_id, params_hash))""")
    # One row per (sample, LSH band): two samples sharing any band hash are candidates.
    con.execute("""
        CREATE TABLE dedup_bands (
            params_hash VARCHAR, scope VARCHAR, band SMALLINT, band_hash UBIGINT, sample_id VARCHAR)""")
    con.execute("CREATE TABLE dedup_params (params_hash VARCHAR PRIMARY KEY, params JSON)")
    # Every export: what was written where, from which rows, with its data card.
    con.execute("""
        CREATE TABLE exports (
            id VARCHAR PRIMARY KEY, kind VARCHAR, pool VARCHAR, path VARCHAR, format VARCHAR,
            rows INTEGER, options JSON, card JSON, run_id VARCHAR,
            created_at TIMESTAMP DEFAULT current_timestamp)""")


def _m004_teacher_logprobs(con: duckdb.DuckDBPyConnection) -> None:
    # Offline logit KD: per exported sample, the teacher's log-probs at every completion position,
    # as arrays (position = row index): top-k ids/log-probs, or tokens sampled from the teacher
    # with their weights. The tokenizer and chat-template hashes and the hash of the scored token
    # ids let the trainer refuse targets computed on a different tokenisation.
    con.execute("""
        CREATE TABLE teacher_logprobs (
            sample_id VARCHAR, teacher VARCHAR, mode VARCHAR, k INTEGER, tokenizer_hash VARCHAR,
            template_hash VARCHAR, tokens_hash VARCHAR, prompt_tokens INTEGER, positions INTEGER,
            ids BLOB, logprobs BLOB, run_id VARCHAR, created_at TIMESTAMP DEFAULT current_timestamp,
            PRIMARY KEY (sample_id, teacher, mode, k))""")


def _m005_run_owner(con: duckdb.DuckDBPyConnection) -> None:
    # host:pid:start-ticks of the process running a run, so the next process that opens the store can mark
    # a run whose process died (kill -9) `interrupted` instead of leaving it `running` forever.
    con.execute("ALTER TABLE runs ADD COLUMN owner VARCHAR")


def _m006_cache_hits(con: duckdb.DuckDBPyConnection) -> None:
    # Requests a run found already finished (a cache hit writes no request row), per model: the
    # run's summary and the viewer show them next to the calls it paid for.
    con.execute("CREATE TABLE cache_hits (run_id VARCHAR, model VARCHAR, hits BIGINT NOT NULL, "
                "PRIMARY KEY (run_id, model))")


MIGRATIONS: list[Callable[[duckdb.DuckDBPyConnection], None]] = [_m001_core, _m002_run_summary, _m003_curation,
                                                                  _m004_teacher_logprobs, _m005_run_owner,
                                                                  _m006_cache_hits]
