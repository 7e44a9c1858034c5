"""The code sandbox: verified code cannot write outside its temp dir, reach the network, spawn
processes, see the parent's secrets, or run past its time or memory limits."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synth import sandbox
from synth.sandbox import check_many, run_python

NS_MODES = [pytest.param(None, id="auto"), pytest.param(False, id="no-netns")]


def test_plain_code_passes_and_prints():
    r = run_python("import math, json\nprint(json.dumps([math.factorial(5)]))")
    assert (r.status, r.passed, r.returncode, r.stdout, r.stderr) == ("passed", True, 0, "[120]\n", "")
    assert 0 < r.duration_s < 5


def test_failures_and_syntax_errors_fail_with_the_users_traceback():
    r = run_python("print('partial')\nassert 1 == 2, 'boom'")
    assert (r.status, r.passed, r.stdout) == ("failed", False, "partial\n")
    assert "AssertionError: boom" in r.stderr and "_main" not in r.stderr
    r = run_python("def (")
    assert r.status == "failed" and "SyntaxError" in r.stderr and "_main" not in r.stderr


@pytest.mark.parametrize("exit_code", ["import sys; sys.exit(0)", "raise SystemExit", "import os; os._exit(0)"])
def test_exiting_early_with_status_zero_is_not_a_pass(exit_code):
    # A completion that exits before the tests run must not count as verified.
    r = run_python(exit_code + "\nraise AssertionError('never reached')")
    assert r.status == "failed" and not r.passed


def test_writing_inside_the_temp_dir_works_and_the_dir_is_removed():
    r = run_python("import os, pathlib, shutil, tempfile\n"
                   "os.makedirs('d/e'); open('d/e/f', 'w').write('x'); shutil.copyfile('d/e/f', 'g')\n"
                   "pathlib.Path('p.txt').write_text('ok'); tempfile.NamedTemporaryFile().close()\n"
                   "print(open('p.txt').read()); print(os.getcwd())")
    assert r.status == "passed", r.stderr
    text, cwd = r.stdout.splitlines()
    assert text == "ok" and not Path(cwd).exists()


@pytest.mark.parametrize("netns", NS_MODES)
@pytest.mark.parametrize("code", [
    "open({p!r}, 'w').write('escaped')",
    "import os; os.close(os.open({p!r}, os.O_WRONLY | os.O_CREAT))",
    "import pathlib; pathlib.Path({p!r}).write_text('escaped')",
    "import shutil; open('a', 'w').write('x'); shutil.copyfile('a', {p!r})",
    "import os; open('a', 'w').write('x'); os.rename('a', {p!r})",
    "import os; os.mkdir({p!r})",
    "try:\n    open({p!r}, 'w')\nexcept BaseException:\n    pass\nopen({p!r} + '2', 'w')",  # catching does not help
])
def test_writing_outside_the_temp_dir_is_blocked(tmp_path, code, netns):
    target = tmp_path / "escaped.txt"
    r = run_python(code.format(p=str(target)), network_namespace=netns)
    assert r.status == "blocked" and not r.passed, r
    assert "sandbox: blocked" in r.stderr and "outside the sandbox directory" in r.stderr
    assert not target.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("code", ["open('../x', 'w')", "import os; os.symlink('/', 'root')",
                                  "import os; os.chdir('/')", "print(open('/etc/hostname').read())",
                                  "import os; os.mkfifo('fifo')"])
def test_escape_routes_around_the_path_check_are_blocked(code):
    r = run_python(code)
    assert r.status == "blocked", r


@pytest.fixture
def listener():
    """A real TCP server on 127.0.0.1; the test asserts it never accepted anything."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.setblocking(False)
    yield srv
    srv.close()


def _assert_no_connection(srv: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        srv.accept()


@pytest.mark.parametrize("netns", NS_MODES)
@pytest.mark.parametrize("code", [
    "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')",
    "import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))\nprint('connected')",
    "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/', timeout=2)",
])
def test_network_is_blocked(listener, code, netns):
    port = listener.getsockname()[1]
    r = run_python(code.format(port=port), network_namespace=netns)
    assert r.status == "blocked" and "connected" not in r.stdout, r
    assert "sandbox: blocked socket." in r.stderr
    _assert_no_connection(listener)


def test_the_network_namespace_alone_stops_connections(listener):
    """The second layer, without the audit hook: `unshare -rn` leaves no route to the host."""
    prefix = sandbox._unshare_prefix()
    if not prefix:
        pytest.skip("unshare -rn does not work on this machine (the audit hook still blocks sockets)")
    port = listener.getsockname()[1]
    code = f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n" \
           "    print('connected')\nexcept OSError as e:\n    print('refused', e.errno)"
    out = subprocess.run([*prefix, sys.executable, "-I", "-c", code], capture_output=True, text=True, check=False,
                         timeout=30, env={}).stdout
    assert out.startswith("refused"), out
    _assert_no_connection(listener)
    assert run_python("pass").network_namespace


def test_requiring_the_network_namespace_where_it_is_missing_is_an_error(monkeypatch):
    monkeypatch.setattr(sandbox, "_unshare_prefix", lambda: ())
    r = run_python("pass", network_namespace=True)
    assert r.status == "error" and "unshare" in r.stderr
    r = run_python("pass")  # auto: falls back silently to the audit hook alone
    assert r.status == "passed" and not r.network_namespace


@pytest.mark.parametrize("code", [
    "import subprocess\nsubprocess.run(['touch', 'x'])",
    "import os\nos.system('touch x')",
    "import os\nos.execv('/bin/true', ['true'])",
    "import os\nos.fork()",
    "import os\nos.posix_spawn('/bin/true', ['true'], {})",
    "import ctypes",
    "import importlib.util as u\nu.module_from_spec(u.find_spec('_posixsubprocess'))",
    "import os\nos.kill(1, 0)",
])
def test_processes_and_native_code_are_blocked(code):
    r = run_python(code)
    assert r.status == "blocked", r
    assert "disabled in the sandbox" in r.stderr


def test_the_parent_environment_does_not_leak(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-123")
    monkeypatch.setenv("DISTILL_TEST_SECRET", "hunter2")
    r = run_python("import os\nprint(sorted(os.environ))\nprint(dict(os.environ))")
    assert r.status == "passed"
    assert "sk-test-secret-123" not in r.stdout and "hunter2" not in r.stdout
    assert "OPENAI_API_KEY" not in r.stdout and "DISTILL_TEST_SECRET" not in r.stdout
    assert r.stdout.splitlines()[0] == str(sorted(["HOME", "LANG", "PATH", "TMPDIR"]))


@pytest.mark.parametrize("netns", NS_MODES)
def test_an_endless_loop_times_out(netns):
    start = time.monotonic()
    r = run_python("print('started', flush=True)\nwhile True:\n    pass", timeout_s=1, network_namespace=netns)
    assert r.status == "timeout" and not r.passed and r.stdout == "started\n"
    assert "time limit" in r.stderr
    assert 1 <= r.duration_s < 3 and time.monotonic() - start < 4


def test_a_sleeping_program_is_stopped_by_the_wall_clock():
    # A sleeping program uses no CPU, so RLIMIT_CPU never fires: the wall clock stops it.
    r = run_python("import time\ntime.sleep(30)", timeout_s=1)
    assert r.status == "timeout" and r.duration_s < 3


def test_resource_limits_are_set_as_hard_limits():
    r = run_python("import resource as R\nfor n in ('AS', 'CPU', 'FSIZE', 'CORE', 'NPROC'):\n"
                   "    print(n, *R.getrlimit(getattr(R, 'RLIMIT_' + n)))", timeout_s=3, memory_mb=300)
    assert r.status == "passed", r
    assert r.stdout.split("\n")[:5] == [f"AS {300 << 20} {300 << 20}", "CPU 4 5",
                                        f"FSIZE {sandbox.FSIZE_BYTES} {sandbox.FSIZE_BYTES}", "CORE 0 0",
                                        "NPROC 0 0"]


def test_a_big_allocation_hits_the_memory_limit():
    r = run_python("x = bytearray(4 << 30)\nprint(len(x))", memory_mb=256)
    assert r.status == "memory" and not r.passed and "MemoryError" in r.stderr


def test_output_is_bounded():
    r = run_python("for i in range(3_000_000):\n    print('x' * 10)")  # 33 MB, over the 16 MB file limit
    assert r.status == "failed" and "File too large" in r.stderr
    assert len(r.stdout) <= sandbox.TAIL_CHARS and len(r.stderr) <= sandbox.TAIL_CHARS


def test_check_many_runs_in_parallel_and_keeps_order():
    good = dict(prompt="def add(a, b):\n", completion="    return a + b\n",
                test="def check(candidate):\n    assert candidate(2, 3) == 5\n", entry_point="add")
    bad = {**good, "completion": "    return a - b\n"}
    results = check_many([good, bad, good, bad], workers=4)
    assert [r.status for r in results] == ["passed", "failed", "passed", "failed"]
    assert check_many([]) == []
