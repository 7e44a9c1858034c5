"""The viewer never writes the store, never keeps a writer out, and follows a run another process is writing
(through Store's read-only snapshot, re-copied when the file changes)."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from core.errors import DistillError
from store.store import Store
from tests.view.seed import build_store
from view.app import start_viewer
from view.source import StoreSource

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["/", "/runs", "/pools/yesno", "/pools/yesno?q=pear&dedup=kept", "/prompts/p-main", "/clusters/minhash/c-a1",
         "/pairs", "/evals", "/evals/eval-test", "/evals/eval-test/plots/cascade.png"]

# A synthesis stand-in in its own process: it holds the store open for writing (DuckDB's lock), records
# a running run and writes requests in two batches, each after a line on stdin.
WRITER = textwrap.dedent("""
    import sys
    from store.store import Store
    with Store(sys.argv[1]) as store:
        run = store.start_run("synth", {"kind": "cot", "teacher": "api:live"})
        def batch(start):
            store.add_requests_and_samples([dict(key=f"w{i}", model="api:live", prompt_id="p-001", status="done",
                                                 prompt_tokens=10, completion_tokens=5, cost_usd=0.5, run_id=run)
                                            for i in range(start, start + 5)], [])
        batch(0)
        print(run, flush=True)
        sys.stdin.readline()
        batch(5)
        print("more", flush=True)
        sys.stdin.readline()
""")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_reading_every_page_leaves_the_store_byte_for_byte(tmp_path):
    seeded = build_store(tmp_path)
    before = _digest(seeded.path)
    with start_viewer(seeded.path) as viewer:
        for page in PAGES:
            assert httpx.get(viewer.url + page.lstrip("/"), timeout=30).status_code == 200, page
        assert _digest(seeded.path) == before and not Path(str(seeded.path) + ".wal").exists()
        # Between pages the viewer holds no lock: a writer opens the store at once.
        with Store(seeded.path) as writer:
            assert writer.count("prompts") == 61


def test_a_run_written_by_another_process_shows_live_through_a_snapshot(tmp_path):
    seeded = build_store(tmp_path)
    with start_viewer(seeded.path, refresh_s=0) as viewer:
        assert "showing a snapshot" not in httpx.get(viewer.url + "runs", timeout=30).text
        # The viewer has read the store; a writer in another process still gets its lock.
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(seeded.path)], cwd=ROOT, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            run_id = writer.stdout.readline().strip()
            assert run_id.startswith("synth-"), writer.stderr.read()
            page = httpx.get(viewer.url + f"runs/{run_id}", timeout=30).text
            assert "showing a snapshot" in page and "Live progress" in page
            assert "<tr><th>requests done</th><td>5</td></tr>" in page and "$2.50" in page
            writer.stdin.write("\n")
            writer.stdin.flush()
            assert writer.stdout.readline().strip() == "more"
            page = httpx.get(viewer.url + f"runs/{run_id}", timeout=30).text
            assert "<tr><th>requests done</th><td>10</td></tr>" in page and "$5.00" in page
            writer.stdin.write("\n")
            writer.stdin.flush()
            assert writer.wait(60) == 0
            page = httpx.get(viewer.url + f"runs/{run_id}", timeout=30).text
            assert "showing a snapshot" not in page and "<td>10</td>" in page
            # The writer left its run `running` and exited: the viewer says so and stops refreshing.
            assert "its process is gone" in page and 'http-equiv="refresh"' not in page
        finally:
            if writer.poll() is None:
                writer.kill()


def test_a_missing_store_is_one_line(tmp_path):
    with pytest.raises(DistillError, match="does not exist"):
        StoreSource(tmp_path / "none.duckdb")
