"""What the CLI modules share."""
from __future__ import annotations

import argparse


def run_config(args: argparse.Namespace) -> dict:
    """A command's flags as its run's config (recorded_run drops secret-looking ones)."""
    return {k: v for k, v in vars(args).items() if k != "func"}
