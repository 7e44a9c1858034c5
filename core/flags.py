"""Flag types that refuse bad values while parsing, and a parser whose errors are one line.

argparse names the flag in its message ("argument --limit: must be an integer >= 1, got 0"); the
parser prints that as one `error:` line and exits 2, before anything is loaded or written.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Callable, NoReturn

from core.errors import DistillError


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


def secret_from_env(env_name: str | None, flag: str) -> str | None:
    """A key or token from the named environment variable, never from the command line (where `ps`
    shows it); None when no variable is named. One line naming the fix when it is unset or short."""
    if env_name is None:
        return None
    secret = os.environ.get(env_name, "")
    if len(secret) < 8:
        raise DistillError(f"{flag} {env_name}: that environment variable is unset or shorter than 8 "
                           f"characters; export {env_name}=<a long random value>")
    return secret
