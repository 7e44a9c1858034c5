"""Every README command that takes under a minute runs as written, in a fresh folder.

(The limit per command is 240 s so a loaded CI box does not fail a command that takes seconds.)

The README marks those commands with a `<!-- readme-test -->` comment right before their
```bash block; each line of such a block runs in order (later lines use what earlier ones
wrote, as a user would), with `distill` from this venv and an empty DISTILL_CACHE.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- readme-test -->"


def readme_blocks() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(re.escape(MARK) + r"\s*```bash\n(.*?)```", text, flags=re.S)
    return [[ln.split("  #")[0].strip() for ln in b.splitlines() if ln.strip() and not ln.startswith("#")]
            for b in blocks]


def test_readme_marks_some_commands():
    assert sum(len(b) for b in readme_blocks()) >= 5


@pytest.mark.parametrize("block", range(len(readme_blocks())))
def test_readme_block_runs_as_written(block, tmp_path):
    env = dict(os.environ, DISTILL_CACHE=str(tmp_path / "cache"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for line in readme_blocks()[block]:
        argv = shlex.split(line)
        if argv[0] == "distill":  # the console script, run through this interpreter (no install needed)
            argv = [sys.executable, "-m", "distill.cli", *argv[1:]]
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
                              check=False)
        assert proc.returncode == 0, f"`{line}` failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
