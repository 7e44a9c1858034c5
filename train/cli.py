"""The flags of the `python -m train.*` scripts (and `distill train ...`): one `--flag` per settings
field, and the one-line error exit. Library functions below take typed settings, never flags."""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, fields
from typing import Any, Callable

from core.errors import DistillError
from core.flags import OneLineParser


def add_settings(parser: argparse.ArgumentParser, settings_cls: type) -> None:
    """One `--flag` per settings field, typed and defaulted from the dataclass; a bool field is a
    `--flag / --no-flag` pair (argparse's `type=bool` would read "False" as True)."""
    for name, value in asdict(settings_cls()).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        elif isinstance(value, (int, float, str)):
            parser.add_argument(flag, type=type(value), default=value)
        else:  # None, lists, dicts: no single flag type; the field needs its own argument
            raise TypeError(f"{settings_cls.__name__}.{name}: add_settings maps int, float, str and bool fields only")


def _prog() -> str:
    """`distill train sft` for train/sft.py, run through `distill train` or `python -m train.sft`."""
    script = sys.argv[0].rsplit("/", 1)[-1].removesuffix(".py") if sys.argv and sys.argv[0] else ""
    return "distill train " + script.replace("_", "-") if script and script != "__main__" else "distill train"


def trainer_parser(doc: str, data_help: str, output_default: str) -> argparse.ArgumentParser:
    """The flags every TRL-trainer script shares: --data, --student, --output, --store."""
    parser = OneLineParser(prog=_prog(), description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help=data_help)
    parser.add_argument("--student", default="smollm2-135m-instruct", help="registry name, path or HF id")
    parser.add_argument("--output", default=output_default, help="where checkpoints and the model go")
    parser.add_argument("--store", default=None, help="DuckDB store to record the run in (config, checkpoints, loss)")
    return parser


def settings_from(args: argparse.Namespace, settings_cls: type) -> Any:
    return settings_cls(**{f.name: getattr(args, f.name) for f in fields(settings_cls)})


def run_script(main: Callable[[], None]) -> None:
    """`python -m train.x`: a user mistake is one `error:` line and exit code 2, as in `distill`."""
    try:
        main()
    except DistillError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
