"""A user's own labelled prompts: .jsonl, .csv or .parquet, one example per line/row.

Required: an input column and a label column (names configurable). Optional: `choices`
(a list, or one "|"-separated string), `rationale`, `id`. Other columns go to meta.
Every problem is reported as one DistillError naming the file, the line/row and the fix.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from core.errors import DistillError
from prompts.rows import PromptRow, split_for, stable_id

FORMATS = (".jsonl", ".csv", ".parquet")
OPTIONAL = ("choices", "rationale", "id")


def _records(path: Path) -> list[tuple[str, dict]]:
    """(where, record) pairs; `where` is "line N" / "row N" for error messages."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        out = []
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            line = path.read_bytes()[: e.start].count(b"\n") + 1
            raise DistillError(f"{path}: line {line} is not UTF-8 (byte {e.start}): save the file as UTF-8") from None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise DistillError(f"{path}: line {n} is not valid JSON ({e.msg}): fix or delete that line") from None
            if not isinstance(rec, dict):
                raise DistillError(f"{path}: line {n} is not a JSON object: write one {{...}} object per line")
            if _has_lone_surrogate(rec):  # "\ud800" parses, but no UTF-8 store or tokenizer can hold it
                raise DistillError(f"{path}: line {n} has a lone surrogate escape (like \\ud800): fix the text")
            out.append((f"line {n}", rec))
        return out
    import pandas as pd  # only for csv/parquet; pandas is slow to import

    try:
        if suffix == ".csv":
            # Keep every cell a string ("NA", "001" stay as written); empty cells are "".
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            df = pd.read_parquet(path)
    except Exception as e:  # pandas/pyarrow raise many types for a broken file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DistillError(f"{path}: cannot read {suffix[1:]} ({first}): check the file is a valid {suffix[1:]}") from None
    return [(f"row {n}", rec) for n, rec in enumerate(df.to_dict("records"), 1)]


def _has_lone_surrogate(value: object) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def _missing(value: object) -> bool:
    # None, NaN, and pandas' NA/NaT (checked by name to avoid importing pandas here)
    return (value is None or (isinstance(value, float) and math.isnan(value))
            or type(value).__name__ in ("NAType", "NaTType"))


def _text(value: object) -> str:
    """A cell as text: strings as-is, numbers and lists as JSON (3 -> "3", True -> "true")."""
    if isinstance(value, str):
        return value
    if hasattr(value, "tolist"):  # numpy scalars and arrays from parquet
        value = value.tolist()
    return json.dumps(value, ensure_ascii=False)


def _choices(value: object, where: str, path: Path) -> list[str] | None:
    if _missing(value) or (isinstance(value, str) and not value.strip()):
        return None
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, str):
        return [c.strip() for c in value.split("|") if c.strip()]
    if isinstance(value, list):
        return [_text(c) for c in value]
    raise DistillError(f"{path}: {where}: choices must be a list or a \"|\"-separated string")


def load_pool_file(path: str | Path, input_col: str = "input", label_col: str = "label",
                   calibration: float = 0.2, test: float = 0.2) -> list[PromptRow]:
    """Rows of a user's labelled file; ids are content hashes unless an `id` column is given."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise DistillError(f"{path}: unsupported file type '{path.suffix}': use one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise DistillError(f"{path}: no such file: check the path")
    records = _records(path)
    if not records:
        raise DistillError(f"{path}: the file has no examples: add rows with '{input_col}' and '{label_col}'")
    rows: list[PromptRow] = []
    seen: set[str] = set()
    for where, rec in records:
        for col in (input_col, label_col):
            if col not in rec or _missing(rec[col]):
                raise DistillError(
                    f"{path}: {where} has no '{col}' value: add it, or pass the right column "
                    f"name (input_col/label_col)"
                )
        text, gold = _text(rec[input_col]).strip(), _text(rec[label_col]).strip()
        if not text:
            raise DistillError(f"{path}: {where} has an empty '{input_col}': fill it in or delete the row")
        choices = _choices(rec.get("choices"), where, path)
        if choices is not None and gold not in choices:
            raise DistillError(f"{path}: {where}: label '{gold}' is not one of its choices {choices}: fix the label or the choices")
        user_id = "" if _missing(rec.get("id")) else _text(rec["id"]).strip()
        rid = user_id or stable_id("file", text, gold)
        if rid in seen:
            if user_id:
                raise DistillError(f"{path}: {where} repeats id '{rid}': give every row a unique id")
            continue  # identical input and label: keep the first
        seen.add(rid)
        rationale = rec.get("rationale")
        rationale = None if _missing(rationale) or not _text(rationale).strip() else _text(rationale).strip()
        extra = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in rec.items()
                 if k not in (input_col, label_col, *OPTIONAL) and not _missing(v)}
        rows.append(PromptRow(id=rid, source="file", task=path.stem, input=text, gold=gold,
                              split=split_for(rid, calibration, test), choices=choices,
                              rationale=rationale, meta=extra))
    return rows
