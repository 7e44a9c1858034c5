"""`distill serve`: an OpenAI-compatible HTTP server for a local model or a calibrated cascade.

example:
  distill serve --model smollm2-135m-instruct --port 8000 --latency 0.5 --faults 429:0.1,drop:0.02
  # then: OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="sk-local").chat.completions.create(
  #           model="smollm2-135m-instruct", messages=[{"role": "user", "content": "Hi"}])
  distill serve --model echo --faults "429@1,3;500@2"   # no model: replies "echo: <first 8 words>"
  distill serve --cascade runs/eval/cascade.json          # student first, teacher when unsure

The server itself is serve/server.py (endpoints, batching, faults); the cascade endpoint is
serve/cascade.py. This module only parses flags and runs one of them until Ctrl-C.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from typing import Any, Iterator

from clients.device import DEVICE_ENV, DEVICE_HELP, DTYPE_ENV, check_device_name
from core.errors import DistillError
from core.flags import OneLineParser, secret_from_env
from serve import faults as fault_kinds
from serve.cascade import start_cascade_server
from serve.server import ServeGuard, start_server


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C, so a benchmark that terminates its server stops it cleanly."""
    if threading.current_thread() is not threading.main_thread():  # signals only reach the main thread
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """`distill serve`: serve until Ctrl-C; returns the exit code."""
    head, _, example = __doc__.partition("example:\n")
    parser = OneLineParser(prog="distill serve", description=head.strip(), epilog="example:\n" + example,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="registry name, local path, or 'echo' (no model)")
    parser.add_argument("--cascade", metavar="SPEC", help="serve a calibrated cascade instead: the cascade.json "
                        "of `distill eval cascade` (serve/cascade.py)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added before every answer")
    parser.add_argument("--faults", help=f"kinds {', '.join(fault_kinds.KINDS)}; e.g. {fault_kinds.EXAMPLE}")
    parser.add_argument("--seed", type=int, default=0, help="fault RNG seed and default generation seed")
    parser.add_argument("--max-batch", type=int, default=16, help="most requests per model call")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a batch waits to fill")
    parser.add_argument("--api-key-env", metavar="NAME", help="an environment variable holding the key callers "
                        "must send as 'Authorization: Bearer <key>' (required with a --host beyond loopback)")
    parser.add_argument("--max-body-mb", type=int, default=16, help="largest request body or uploaded batch file")
    parser.add_argument("--max-choices", type=int, default=64, help="most completions one request may ask for "
                        "(prompts x n)")
    parser.add_argument("--device", default="auto", help=f"where the model(s) run: {DEVICE_HELP}; default auto "
                        f"(${DEVICE_ENV} overrides auto). Weights load in bf16 on a GPU with native bf16, "
                        f"fp32 on the CPU (${DTYPE_ENV}=float32 forces fp32)")
    args = parser.parse_args(argv)
    try:
        check_device_name(args.device)  # a typo fails before anything loads; CUDA itself is checked at load
        guard = ServeGuard(api_key=secret_from_env(args.api_key_env, "--api-key-env"), max_body_mb=args.max_body_mb,
                           max_choices=args.max_choices)
    except DistillError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    options: dict[str, Any] = {"host": args.host, "port": args.port, "latency_s": args.latency,
                               "faults": args.faults, "seed": args.seed, "max_batch": args.max_batch,
                               "batch_wait_ms": args.batch_wait_ms, "guard": guard, "device": args.device}
    try:
        if (args.model is None) == (args.cascade is None):
            raise DistillError("serve needs one of --model NAME or --cascade SPEC.json")
        if args.cascade:
            handle = start_cascade_server(args.cascade, **options)
        else:
            handle = start_server(args.model, **options)
    except DistillError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"serving {args.model or 'cascade ' + args.cascade} at {handle.url} (Ctrl-C stops)", flush=True)
    try:
        with _sigterm_as_interrupt():
            threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop()
    print(f"stopped; {json.dumps(handle.stats)}", file=sys.stderr)
    return 0
