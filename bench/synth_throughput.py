"""API-teacher client throughput against a loopback OpenAI-compatible server, ours vs Bespoke Curator.

The server (`distill serve --model echo`, its own process) answers every request after a fixed
latency L. With at most C requests in flight no client can beat C/L requests/s, so each run is
reported as a share of C/L. Ours is `engine.api_engine.run_api_requests` writing every result to a
real DuckDB store, as a stage does; Curator is `curator.LLM` (backend "openai") run by its own
venv's python. Each run gets a fresh server and times the engine call alone (imports excluded).

run:
  /tmp/venv0/bin/python bench/synth_throughput.py              # 10,000 requests at C = 64 and 256
  /tmp/venv0/bin/python bench/synth_throughput.py --quick      # 1,000 requests
  options: --requests N  --latency 0.5  --concurrency 64 256  --curator-python PATH  --no-litellm-row
Curator goes in a venv of its own:
  python3 -m venv /tmp/venv-curator && /tmp/venv-curator/bin/pip install bespokelabs-curator
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MAX_TOKENS = 16


def prompt(i: int) -> str:
    return f"Request {i}: name one fact about the number {i} in a single short sentence."


class Server:
    """`distill serve --model echo --latency L` on a free loopback port, in a child process."""

    def __init__(self, latency: float) -> None:
        code = "import sys; from serve.cli import main; sys.exit(main())"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, "--model", "echo", "--latency", str(latency), "--port", "0"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        line = self.proc.stdout.readline()  # "serving echo at http://127.0.0.1:PORT/v1 (Ctrl-C stops)"
        if " at " not in line:
            self.proc.kill()
            raise SystemExit(f"error: the echo server did not start: {line!r}")
        self.url = line.split(" at ", 1)[1].split()[0]

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()  # SIGTERM: serve stops cleanly
        self.proc.wait(10)


def run_ours(url: str, n: int, c: int, via_litellm: bool = False) -> dict:
    from store.store import Store
    from clients.api import ApiTeacher
    from engine.api_engine import RunStats, run_api_requests
    from engine.jobs import GenParams, Job

    class ViaLitellm(ApiTeacher):  # the route every named provider takes: litellm.acompletion per call
        direct = False

    teacher = (ViaLitellm if via_litellm else ApiTeacher)("bench", "openai/echo", api_base=url, api_key="sk-bench")
    jobs = [Job(prompt_id=f"p{i}", rendered=teacher.render(prompt(i))) for i in range(n)]
    stats = RunStats()
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.duckdb") as store:
        began, cpu = time.perf_counter(), time.process_time()
        run_api_requests(store, teacher, jobs, GenParams(max_new_tokens=MAX_TOKENS), purpose="bench",
                         run_id="bench", max_concurrency=c, stats=stats)
        seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
        stored = store.count("requests", "status = 'done'")
    # AdaptiveConcurrency starts at max_concurrency and only 429s cut it: check it stayed at C.
    assert stats.lowest_concurrency == c, stats
    return dict(seconds=seconds, cpu=cpu, done=stored, failed=n - stored)


CURATOR_CHILD = r"""
import json, os, sys, tempfile, time
url, prompts_path, c, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
import litellm  # its bundled cl100k_base file: tiktoken would download it, and we are offline
os.environ["TIKTOKEN_CACHE_DIR"] = os.path.join(os.path.dirname(litellm.__file__), "litellm_core_utils", "tokenizers")
from bespokelabs import curator

class Bench(curator.LLM):
    def prompt(self, row):
        return row["prompt"]

    def parse(self, row, response):
        return {"prompt": row["prompt"], "response": response}

rows = [{"prompt": p} for p in json.load(open(prompts_path))]
llm = Bench(model_name="echo", backend="openai", generation_params={"max_tokens": max_tokens, "temperature": 0.0},
            backend_params={"base_url": url, "api_key": "sk-bench", "max_concurrent_requests": c,
                            # no rate limits but the concurrency one (its defaults are 200 rpm and 100k tpm)
                            "max_requests_per_minute": 10**9, "max_tokens_per_minute": 10**12,
                            "require_all_responses": False})
began, cpu = time.perf_counter(), time.process_time()
out = llm(rows, working_dir=tempfile.mkdtemp(prefix="curator-bench-"))
seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
done = sum(1 for r in out.dataset if r["response"])
print(json.dumps(dict(seconds=seconds, cpu=cpu, done=done, failed=len(rows) - done)))
"""


def run_curator(python: str, url: str, n: int, c: int) -> dict:
    env = {**os.environ, "TELEMETRY_ENABLED": "false", "CURATOR_DISABLE_CACHE": "true",
           "CURATOR_DISABLE_RICH_DISPLAY": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "OPENAI_API_KEY": "sk-bench"}
    env.pop("CURATOR_VIEWER", None)
    with tempfile.TemporaryDirectory() as tmp:
        env["CURATOR_CACHE_DIR"] = tmp
        prompts = Path(tmp) / "prompts.json"
        prompts.write_text(json.dumps([prompt(i) for i in range(n)]))
        proc = subprocess.run([python, "-c", CURATOR_CHILD, url, str(prompts), str(c), str(MAX_TOKENS)], cwd=tmp,
                              env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"Curator exited with {proc.returncode}:\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def versions(curator_python: str | None) -> str:
    from importlib.metadata import version
    ours = ", ".join(f"{p} {version(p)}" for p in ("litellm", "aiohttp", "duckdb"))
    line = f"Python {platform.python_version()}, {os.cpu_count()} CPUs; ours: {ours}"
    if curator_python:
        got = subprocess.run([curator_python, "-c", "from importlib.metadata import version as v; "
                              "print(v('bespokelabs-curator'), v('litellm'), v('aiohttp'))"],
                             capture_output=True, text=True).stdout.split()
        if len(got) == 3:
            line += f"; bespokelabs-curator {got[0]} (litellm {got[1]}, aiohttp {got[2]})"
    return line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="1,000 requests")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds the server holds each request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--curator-python", default="/tmp/venv-curator/bin/python")
    parser.add_argument("--no-litellm-row", action="store_true",
                        help="skip our litellm path (the generic provider route), run for comparison")
    args = parser.parse_args()
    n, lat = (1_000 if args.quick else args.requests), args.latency
    curator_python = args.curator_python if Path(args.curator_python).exists() else None
    if curator_python is None:
        print(f"Curator: not installed ({args.curator_python} missing)", file=sys.stderr)

    engines = [("ours", lambda url, c: run_ours(url, n, c))]
    if not args.no_litellm_row:
        engines.append(("ours via litellm", lambda url, c: run_ours(url, n, c, via_litellm=True)))
    if curator_python:
        engines.append(("Curator", lambda url, c: run_curator(curator_python, url, n, c)))
    rows = []
    for c in args.concurrency:
        for name, fn in engines:
            with Server(lat) as server:
                try:
                    res = fn(server.url, c)
                except RuntimeError as exc:  # Curator failing must not lose our numbers
                    print(f"{name} at C={c} failed: {exc}", file=sys.stderr)
                    continue
            rate = res["done"] / res["seconds"]
            rows.append(dict(engine=name, c=c, **res, rate=rate, share=rate / (c / lat)))
            print(f"  {name:17s} C={c:<4d} {res['seconds']:7.2f} s  {rate:7.1f} req/s  {rate / (c / lat):6.1%}"
                  f"  ({res['failed']} failed)", file=sys.stderr, flush=True)

    print(f"\n{n} distinct prompts, max_tokens {MAX_TOKENS}, server latency L = {lat} s")
    print(versions(curator_python) + ("" if curator_python else "\nCurator: not installed") + "\n")
    print("| engine | C | L (s) | requests | seconds | req/s | share of C/L | client CPU ms/req | ours/Curator |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cur = next((x for x in rows if x["engine"] == "Curator" and x["c"] == r["c"]), None)
        ratio = f"{r['rate'] / cur['rate']:.2f}x" if cur and r["engine"] != "Curator" else ""
        done = f"{r['done']}" + (f" ({r['failed']} failed)" if r["failed"] else "")
        print(f"| {r['engine']} | {r['c']} | {lat} | {done} | {r['seconds']:.2f} | {r['rate']:.1f} | "
              f"{r['share']:.1%} | {1000 * r['cpu'] / n:.2f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
