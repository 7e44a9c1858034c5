"""`distill view`: browse one store in a local web app, read-only.

example:
  distill view --store runs/s.duckdb                 # then open the printed URL
  distill view --store runs/s.duckdb --port 0        # any free port
  VIEW_TOKEN=$(openssl rand -hex 16) distill view --store runs/s.duckdb --host 0.0.0.0 --token-env VIEW_TOKEN

Pages: runs (live progress of a running one), a pool's prompts (filters, search), one prompt with
every teacher's samples, dedup clusters, preference pairs and evaluations. The store is only ever
read: with `Store(path, read_only=True)` per page, or, while another process writes it (a synthesis
run), a snapshot copy of it (view/source.py). The app itself is view/app.py.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from core.errors import DistillError
from core.flags import OneLineParser, secret_from_env
from view.app import start_viewer

DEFAULT_STORE = "runs/distill.duckdb"  # the other subcommands' default (distill/cli.py)


def main(argv: list[str] | None = None) -> int:
    """`distill view`: serve until Ctrl-C; returns the exit code."""
    head, _, example = __doc__.partition("example:\n")
    parser = OneLineParser(prog="distill view", description=head.strip(), epilog="example:\n" + example,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default=DEFAULT_STORE, help=f"the store to show (default {DEFAULT_STORE})")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only; "
                        "any other needs --token-env)")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port (default 8765)")
    parser.add_argument("--token-env", metavar="NAME", help="an environment variable holding an access token "
                        "(for shared machines): open the URL once with ?token=<token>, a cookie keeps it")
    parser.add_argument("--refresh-s", type=float, default=2.0, help="while another process writes the store, "
                        "copy a new snapshot at most this often (default 2)")
    args = parser.parse_args(argv)
    try:
        if args.refresh_s < 0:
            raise DistillError("--refresh-s must be >= 0")
        token = secret_from_env(args.token_env, "--token-env")
        handle = start_viewer(args.store, host=args.host, port=args.port, token=token,
                              refresh_s=args.refresh_s)
    except DistillError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    hint = f" (open it once with ?token=<${args.token_env}>)" if args.token_env else ""
    print(f"viewing {args.store} read-only at {handle.url}{hint} (Ctrl-C stops)", flush=True)

    def interrupt(signum: int, frame: Any) -> None:  # SIGTERM stops it like Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0
