"""A user's own labelled file: jsonl / csv / parquet, and one-line errors for broken files."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from core.errors import DistillError
from prompts.pool_file import load_pool_file

RECORDS = [
    {"input": "2+2?", "label": "4", "rationale": "two and two", "choices": ["3", "4"], "lang": "en"},
    {"input": "Capital of France?", "label": "Paris"},
    {"input": "2+2?", "label": "4"},  # same input and label as the first: dropped
]


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_jsonl(tmp_path):
    rows = load_pool_file(_jsonl(tmp_path / "mine.jsonl", RECORDS))
    assert len(rows) == 2
    first, second = rows
    assert (first.source, first.task, first.input, first.gold) == ("file", "mine", "2+2?", "4")
    assert first.choices == ["3", "4"] and first.rationale == "two and two"
    assert first.meta == {"lang": "en"} and second.choices is None and second.rationale is None
    assert [r.id for r in rows] == [r.id for r in load_pool_file(tmp_path / "mine.jsonl")]


def test_csv_with_pipe_choices_custom_columns_and_ids(tmp_path):
    path = tmp_path / "pool.csv"
    pd.DataFrame({"question": ["Q1", "Q2"], "answer": ["b", "NA"], "choices": ["a|b|c", ""],
                  "id": ["x1", "x2"]}).to_csv(path, index=False)
    rows = load_pool_file(path, input_col="question", label_col="answer", test=1.0, calibration=0.0)
    assert [r.id for r in rows] == ["x1", "x2"]
    assert rows[0].choices == ["a", "b", "c"] and rows[1].choices is None
    assert rows[1].gold == "NA"  # kept as written, not read as a missing value
    assert {r.split for r in rows} == {"test"}


def test_parquet_with_list_choices_and_numbers(tmp_path):
    path = tmp_path / "pool.parquet"
    pd.DataFrame({"input": ["pick", "count"], "label": [1, 2],
                  "choices": [["1", "2"], None]}).to_parquet(path)
    rows = load_pool_file(path)
    assert [r.gold for r in rows] == ["1", "2"] and rows[0].choices == ["1", "2"] and rows[1].choices is None


@pytest.mark.parametrize("name, content, pattern", [
    ("bad.jsonl", '{"input": "a", "label": "b"}\n{"input": oops}\n', r"bad\.jsonl: line 2 is not valid JSON"),
    ("list.jsonl", '[1, 2]\n', r"line 1 is not a JSON object"),
    ("nolabel.jsonl", '{"input": "a", "label": "b"}\n\n{"input": "c"}\n', r"line 3 has no 'label' value"),
    ("empty.jsonl", "\n\n", r"empty\.jsonl: the file has no examples"),
    ("blank.jsonl", '{"input": "  ", "label": "b"}\n', r"line 1 has an empty 'input'"),
    ("choice.jsonl", '{"input": "a", "label": "z", "choices": "x|y"}\n', r"label 'z' is not one of its choices"),
    ("dup.jsonl", '{"input": "a", "label": "b", "id": 1}\n{"input": "c", "label": "d", "id": 1}\n',
     r"line 2 repeats id '1'"),
    ("nocol.csv", "question,label\nq,a\n", r"nocol\.csv: row 1 has no 'input' value.*input_col"),
    ("empty.csv", "", r"empty\.csv: cannot read csv"),
    ("junk.parquet", "not parquet", r"junk\.parquet: cannot read parquet"),
    ("notes.txt", "hello", r"unsupported file type '\.txt': use one of \.jsonl, \.csv, \.parquet"),
])
def test_malformed_files_give_one_line_errors(tmp_path, name, content, pattern):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DistillError, match=pattern) as err:
        load_pool_file(path)
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(DistillError, match=r"nothere\.jsonl: no such file"):
        load_pool_file(tmp_path / "nothere.jsonl")


def test_shipped_example_pool_loads_with_rationales():
    from pathlib import Path

    from prompts.pool_file import load_pool_file

    path = Path(__file__).resolve().parents[2] / "prompts" / "pools" / "arithmetic_word_problems.jsonl"
    rows = load_pool_file(path)
    assert len(rows) == 40 and all(r.rationale and r.gold.isdigit() for r in rows)
    assert {r.split for r in rows} == {"train", "calibration", "test"}
