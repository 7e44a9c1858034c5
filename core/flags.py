"""Flag types that refuse bad values while parsing, and a parser whose errors are one line.

argparse names the flag in its message ("argument --limit: must be an integer >= 1, got 0"); the
parser prints that as one `error:` line and exits 2, before anything is loaded or written.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Callable, NoReturn


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def integer(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def number(low: float, high: float = math.inf, *, above_low: bool = False) -> Callable[[str], float]:
    """A finite float in [low, high] (or (low, high] with above_low)."""
    span = f"{'>' if above_low else '>='} {low:g}" + (f" and <= {high:g}" if high < math.inf else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number {span}, got {text!r}") from None
        if not math.isfinite(value) or value < low or value > high or (above_low and value == low):
            raise argparse.ArgumentTypeError(f"must be a number {span}, got {text}")
        return value
    parse.__name__ = f"number {span}"
    return parse


def output_file(text: str) -> str:
    """A file path we can create: not a directory, its folder creatable and writable."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory: give a file path, e.g. {path / 'out.jsonl'}")
    parent = path.resolve().parent
    existing = next((p for p in [parent, *parent.parents] if p.exists()), None)
    if existing is None or not existing.is_dir() or not _writable(existing) or str(parent).startswith(("/proc", "/sys")):
        raise argparse.ArgumentTypeError(f"cannot write {text}: {existing} is not a writable folder")
    return text


def _writable(folder: Path) -> bool:
    import os
    return os.access(folder, os.W_OK | os.X_OK)


def run_config(args: argparse.Namespace) -> dict:
    """A command's flags as its run's config (recorded_run drops secret-looking ones)."""
    return {k: v for k, v in vars(args).items() if k != "func"}
