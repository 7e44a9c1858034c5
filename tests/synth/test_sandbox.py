"""The code sandbox is an operating-system boundary (synth/sandbox.py): hostile code cannot write or
read outside it, reach the network, start processes, signal anything outside, or outgrow its time,
memory and disk limits, whatever it does to the interpreter it runs in."""
from __future__ import annotations

import os
import socket
import subprocess
import textwrap
import time

import pytest

from synth import sandbox
from synth.sandbox import run_python

# Tampering with the interpreter first (the old in-process guard fell to each of these), then the act.
TAMPER = [
    "",
    "import builtins; builtins.any = lambda *a: False; builtins.open = open\n",
    "import os; os.path.realpath = lambda p, **k: '/sandbox/x'\n",
    "import sys; sys.addaudithook = lambda hook: None\n",
    "import gc; [setattr(f, '__code__', (lambda *a: None).__code__) for f in gc.get_objects() "
    "if callable(f) and getattr(f, '__name__', '') in ('_guard', '_block')]\n",
    "import sys; frame = sys._getframe(); frame.f_globals.update(_ROOT='/', _READ=('/',))\n",
]


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A host directory with a secret file, a secret in the environment and a TCP listener."""
    secret = tmp_path / "secret.txt"
    secret.write_text("the-host-secret-0xC0FFEE")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-secret-0xBEEF")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.setblocking(False)
    yield {"dir": tmp_path, "secret": secret, "port": srv.getsockname()[1], "server": srv}
    srv.close()


def _assert_contained(result, host) -> None:
    text = result.stdout + result.stderr
    assert "0xC0FFEE" not in text and "0xBEEF" not in text, "a host secret reached the sandbox"
    assert sorted(p.name for p in host["dir"].iterdir()) == ["secret.txt"], "something was written on the host"
    assert host["secret"].read_text() == "the-host-secret-0xC0FFEE"
    with pytest.raises(BlockingIOError):
        host["server"].accept()  # nothing connected to the host


ATTACKS = {
    "write a host file": "open({dir!r} + '/escaped', 'w').write('x')",
    "write with os.open": "import os; os.close(os.open({dir!r} + '/escaped', os.O_WRONLY | os.O_CREAT))",
    "rename out": "import os; open('a', 'w').write('x'); os.rename('a', {dir!r} + '/escaped')",
    "symlink out": "import os; os.symlink({dir!r}, 'l'); open('l/escaped', 'w').write('x')",
    "read the secret file": "print(open({secret!r}).read())",
    "read the environment": "import os; print(dict(os.environ))",
    "read /proc of pid 1": "print(open('/proc/1/environ', 'rb').read())",
    "walk the filesystem": "import os\nfor d, _, fs in os.walk('/'):\n    [print(open(os.path.join(d, f), errors='ignore').read(200)) "
                           "for f in fs if 'secret' in f]",
    "connect to the host": "import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)",
    "raw _socket": "import _socket; s = _socket.socket(); s.connect(('127.0.0.1', {port}))",
    "ctypes connect": "import ctypes, socket; s = socket.socket(); s.connect(('127.0.0.1', {port}))",
}


@pytest.mark.parametrize("tamper", TAMPER, ids=["plain", "builtins", "realpath", "audithook", "gc-code", "globals"])
@pytest.mark.parametrize("attack", ATTACKS, ids=list(ATTACKS))
def test_hostile_code_is_contained(host, attack, tamper):
    code = tamper + ATTACKS[attack].format(dir=str(host["dir"]), secret=str(host["secret"]), port=host["port"])
    result = run_python(code, timeout_s=10)
    _assert_contained(result, host)


@pytest.mark.parametrize("code", [
    "import os\nif os.fork() == 0:\n    open('marker', 'w'); os._exit(0)",
    "import subprocess; subprocess.run(['touch', 'marker'])",
    "import os; os.system('touch marker')",
    "import os; os.posix_spawn('/usr/bin/touch', ['touch', 'marker'], {})",
    "import multiprocessing as m\np = m.Process(target=open, args=('marker', 'w')); p.start(); p.join()",
    "import os\nfor _ in range(10_000):\n    os.fork() == 0 and open('marker', 'w')",  # a fork bomb
    "import pty\nif pty.fork()[0] == 0:\n    open('marker', 'w')",
])
def test_no_new_process_can_start(code):
    guarded = f"try:\n{textwrap.indent(code, '    ')}\nexcept OSError as e:\n    print('refused:', e)\n"
    result = run_python(guarded + "import os, time; time.sleep(0.2); print('spawned' if os.path.exists('marker') else "
                        "'no process ran')", timeout_s=10)
    assert result.stdout.rstrip().endswith("no process ran"), result


@pytest.mark.parametrize("code", [
    "import os, signal; os.kill({pid}, signal.SIGKILL)",
    "import os, signal; os.kill(os.getppid(), signal.SIGKILL)",
    "import os, signal; os.kill(-1, signal.SIGKILL)",
    "import os, signal; os.killpg(0, signal.SIGKILL)",
    "import os, signal; signal.pidfd_send_signal(os.pidfd_open({pid}), signal.SIGKILL)",
    "import os, signal; signal.pidfd_send_signal(os.pidfd_open(os.getppid()), signal.SIGKILL)",
    "import ctypes; ctypes.CDLL(None).kill({pid}, 9)",
])
def test_nothing_outside_can_be_signalled(code):
    canary = subprocess.Popen(["sleep", "60"])  # a host process the code knows the pid of
    try:
        run_python(code.format(pid=canary.pid), timeout_s=10)
        time.sleep(0.2)
        assert canary.poll() is None, "the sandboxed code killed a host process"
    finally:
        canary.kill(), canary.wait()


def test_plain_code_runs_and_sees_only_its_own_world():
    r = run_python("import json, math, os\nprint(json.dumps([math.factorial(5), os.getuid(), os.getcwd()]))\n"
                   "print(sorted(os.environ))\nprint(sorted(os.listdir('/')))")
    assert r.status == "passed" and r.returncode == 0, r.stderr
    first, env, top = r.stdout.splitlines()
    assert first == f"[120, 65534, \"{sandbox.WORKDIR}\"]"  # nobody, in the private tmpfs
    assert env == str(sorted(["HOME", "LANG", "PATH", "PWD", "PYTHONDONTWRITEBYTECODE", "TMPDIR"]))
    assert "work" not in top and "tmp" not in top and "home" not in top, top


def test_failures_carry_the_users_traceback():
    r = run_python("print('partial')\nassert 1 == 2, 'boom'")
    assert (r.status, r.passed, r.stdout) == ("failed", False, "partial\n")
    assert "AssertionError: boom" in r.stderr


def test_threads_still_work():
    r = run_python("import threading\nt = threading.Thread(target=print, args=('from a thread',))\nt.start(); t.join()")
    assert r.status == "passed" and r.stdout == "from a thread\n", r.stderr


def test_an_endless_loop_and_a_sleep_time_out():
    for code in ("print('started', flush=True)\nwhile True:\n    pass", "import time\ntime.sleep(30)"):
        start = time.monotonic()
        r = run_python(code, timeout_s=1)
        assert r.status == "timeout" and not r.passed and "time limit" in r.stderr
        assert time.monotonic() - start < 4


def test_memory_and_disk_are_capped():
    r = run_python("x = bytearray(4 << 30)", memory_mb=256)
    assert r.status == "memory" and "MemoryError" in r.stderr
    start = time.monotonic()
    r = run_python("f = open('big', 'wb')\nfor _ in range(700):\n    f.write(b'0' * (1 << 20))")  # 700 MB
    assert r.status == "failed" and ("File too large" in r.stderr or "No space left" in r.stderr), r.stderr
    assert time.monotonic() - start < 10
    r = run_python("for i in range(3_000_000):\n    print('x' * 10)")  # 33 MB of output, over the file limit
    assert r.status == "failed" and len(r.stdout) <= sandbox.TAIL_CHARS


def test_limits_are_hard_and_set_outside():
    r = run_python("import resource as R\nfor n in ('AS', 'CPU', 'FSIZE', 'CORE'):\n"
                   "    print(n, *R.getrlimit(getattr(R, 'RLIMIT_' + n)))\n"
                   "R.setrlimit(R.RLIMIT_AS, (R.RLIM_INFINITY, R.RLIM_INFINITY))", timeout_s=3, memory_mb=300)
    assert r.stdout.splitlines() == [f"AS {300 << 20} {300 << 20}", "CPU 4 5",
                                     f"FSIZE {sandbox.FSIZE_BYTES} {sandbox.FSIZE_BYTES}", "CORE 0 0"]
    assert r.status == "failed" and "ValueError" in r.stderr  # a hard limit cannot be raised


def test_no_temp_dir_is_left_behind():
    import tempfile
    before = {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("distill-sandbox-")}
    run_python("import os, signal; os.kill(os.getppid(), signal.SIGKILL)")
    after = {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("distill-sandbox-")}
    assert after <= before


def test_a_missing_bubblewrap_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(sandbox, "_bwrap_path", lambda: (_ for _ in ()).throw(
        sandbox.SandboxUnavailable("bubblewrap is not installed: run `make`")))
    sandbox.check_sandbox.cache_clear()
    try:
        with pytest.raises(sandbox.SandboxUnavailable, match="bubblewrap is not installed"):
            run_python("print(1)")
    finally:
        sandbox.check_sandbox.cache_clear()
