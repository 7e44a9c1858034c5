"""Page load times of `distill view` on a large store: 1,000,000 samples by default.

    .venv/bin/python tests/view/measure_load.py [--samples 1000000] [--per-prompt 10]

The store is built inside DuckDB by Store.add_synthetic_pool (INSERT ... SELECT over range()): prompts,
one request, one cot sample and one answer_match verdict per sample, and a dedup cluster every 7th
prompt. Each page is fetched over loopback HTTP twice (the first load opens the file cold); the times
are the whole request: open the store read-only, run the queries, render, send. tests/view/test_load.py
runs this as a test marked slow.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":  # run as a script from anywhere: the repo root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx  # noqa: E402

from store.store import Store  # noqa: E402
from view.app import start_viewer  # noqa: E402

POOL = "big"


def pages(prompts: int) -> dict[str, str]:
    last = prompts - 1
    return {
        "index": "/",
        "runs": "/runs",
        "pool, page 1": f"/pools/{POOL}",
        "pool, middle page": f"/pools/{POOL}?page={max(1, prompts // 100)}",
        "pool, teacher + failed + split": f"/pools/{POOL}?teacher=teacher-b&outcome=failed&split=test",
        "pool, dedup dropped": f"/pools/{POOL}?dedup=dropped",
        "pool, full-text search": f"/pools/{POOL}?q=question+{last}%3A",
        "one prompt": f"/prompts/{POOL}-p{last:09d}",
        "dedup cluster": f"/clusters/exact/{POOL}-c{0:09d}",
        "pairs": "/pairs",
    }


def measure(folder: Path, samples: int = 1_000_000, per_prompt: int = 10) -> dict:
    """Build the store in `folder`, load every page twice; returns build seconds and per-page seconds."""
    path = folder / "big.duckdb"
    prompts = samples // per_prompt
    began = time.perf_counter()
    with Store(path) as store:
        made = store.add_synthetic_pool(POOL, prompts, per_prompt)
        store.con.execute("CHECKPOINT")  # the file as a finished stage leaves it
    build_s = time.perf_counter() - began
    out: dict = {"samples": made, "prompts": prompts, "build_s": build_s, "file_mb": path.stat().st_size / 2**20,
                 "pages": {}}
    with start_viewer(path) as viewer, httpx.Client(timeout=600) as client:
        for name, url in pages(prompts).items():
            times = []
            for _ in range(2):
                t = time.perf_counter()
                r = client.get(viewer.url + url.lstrip("/"))
                times.append(time.perf_counter() - t)
                if r.status_code != 200:
                    raise AssertionError(f"{url}: HTTP {r.status_code}: {r.text[-300:]}")
            out["pages"][name] = {"url": url, "first_s": times[0], "again_s": times[1], "bytes": len(r.content)}
    return out


def report(result: dict) -> str:
    lines = [f"{result['samples']:,} samples over {result['prompts']:,} prompts: built in {result['build_s']:.1f} s, "
             f"file {result['file_mb']:.0f} MiB", f"{'page':<34} {'first':>8} {'again':>8}  url"]
    for name, p in result["pages"].items():
        lines.append(f"{name:<34} {p['first_s']:>7.3f}s {p['again_s']:>7.3f}s  {p['url']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--per-prompt", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="distill-view-load-") as folder:
        print(report(measure(Path(folder), args.samples, args.per_prompt)))


if __name__ == "__main__":
    main()
