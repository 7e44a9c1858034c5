"""Run untrusted Python (teacher-written code) against unit tests in a limited subprocess.

Layers, each catching what the one before may miss:
  1. a child `python -I -S` (no user site or site-packages, PYTHON* env ignored) with a tiny
     explicit environment (no API keys), in a fresh temp dir that is deleted afterwards;
  2. a prelude, run before the user code, that sets rlimits (memory, CPU, file size, no core,
     no new processes) and installs a `sys.addaudithook` guard: no sockets, processes, ctypes
     or sub-interpreters, no writes outside the temp dir, no reads outside it but the stdlib.
     A blocked action ends the run at once (os._exit): user code cannot catch and ignore it;
  3. `unshare -rn` (user + network namespace: only a down loopback) where it works; and
     a wall-clock timeout that kills the whole process group.
What this is NOT: a security boundary against code that attacks the interpreter on purpose
(audit hooks can be bypassed by patching the modules the hook relies on, and os.mkfifo /
os.mknod raise no audit event). Run hostile code in a container or VM (gVisor, firecracker).
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

STATUSES = ("passed", "failed", "timeout", "memory", "blocked", "error")
BLOCKED_EXIT = 86  # the guard's exit code; the status also needs its message in stderr
TAIL_CHARS = 4000  # stdout / stderr tails kept in a result
FSIZE_BYTES = 16 << 20  # largest file the code may write (its stdout and stderr files included)

# Runs in the child before the user code. argv: memory bytes, CPU seconds, file size bytes. stdin: a
# random nonce line, then the program. The nonce is printed only once the program ran to its end, so a
# `sys.exit(0)` or `os._exit(0)` halfway through the tests is no pass.
_PRELUDE = r"""
import os, sys, resource, posix
_mem, _cpu, _fsize = map(int, sys.argv[1:4])
# Hard limits too, so the code cannot raise them. NPROC 0: no fork, no threads (root ignores it).
for _which, _soft, _hard in ((resource.RLIMIT_AS, _mem, _mem), (resource.RLIMIT_CPU, _cpu, _cpu + 1),
        (resource.RLIMIT_FSIZE, _fsize, _fsize), (resource.RLIMIT_CORE, 0, 0), (resource.RLIMIT_NPROC, 0, 0)):
    try: resource.setrlimit(_which, (_soft, _hard))
    except (ValueError, OSError): pass
_nonce, _, _src = sys.stdin.buffer.read().partition(b"\n")
_ROOT = os.path.realpath(os.getcwd())
_READ = tuple(os.path.realpath(p) for p in sys.path if p) + ("/dev/null", "/dev/urandom", "/dev/zero")
_BLOCKED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.fork", "os.kill",
            "os.symlink", "os.chdir", "ctypes.", "sqlite3.", "syslog.", "resource.setrlimit",
            "resource.prlimit", "signal.pthread_kill", "webbrowser.")
# C modules that spawn processes, write files or escape the hook without an audit event of their own.
_NO_IMPORT = {"_posixsubprocess", "_ctypes", "_xxsubinterpreters", "_testcapi", "_testinternalcapi",
              "_multiprocessing", "_posixshmem", "_sqlite3", "_dbm", "_gdbm", "readline"}
# Events that change the filesystem: which arguments are paths that must stay inside the temp dir.
_PATHS = {**dict.fromkeys("os.mkdir os.rmdir os.remove os.chmod os.chown os.utime os.truncate os.setxattr "
                          "os.removexattr shutil.rmtree shutil.chown shutil.make_archive".split(), (0,)),
          **dict.fromkeys("shutil.copyfile shutil.copytree shutil.copymode shutil.copystat "
                          "shutil.unpack_archive".split(), (1,)), "os.rename": (0, 1), "os.link": (0, 1),
          "shutil.move": (0, 1)}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
def _exit(code, message=""):  # os._exit: no atexit handler or finally clause runs after it
    for stream in (sys.stdout, sys.stderr):
        try: stream.flush()
        except BaseException: pass
    os.write(2, message.encode("utf-8", "replace"))
    os._exit(code)
def _block(what): _exit(86, f"\nsandbox: blocked {what}\n")  # 86 is BLOCKED_EXIT
def _resolve(p):
    if type(p) is int:  # a file descriptor: where it points
        return os.path.realpath(f"/proc/self/fd/{p}")
    pathlib = sys.modules.get("pathlib")
    if not (type(p) in (str, bytes) or (pathlib and type(p) in (pathlib.PosixPath, pathlib.PurePosixPath))):
        _block(f"path of type {type(p).__name__} (pass a str)")  # __fspath__ could lie to the guard
    p = os.fsdecode(os.fspath(p))
    if not os.path.isabs(p) and ".." in p.split("/"):
        _block(f"relative path with '..': {p}")  # it may be relative to a dir_fd the hook cannot see
    return os.path.realpath(p)
def _under(p, roots): return any(p == r or p.startswith(r.rstrip("/") + "/") for r in roots)
def _guard(event, args):
    if event.startswith(_BLOCKED):
        _block(f"{event}: network, processes and native code are disabled in the sandbox")
    elif event == "import" and args[0] in _NO_IMPORT:
        _block(f"import of {args[0]}: processes and native code are disabled in the sandbox")
    elif event == "open" and type(args[0]) is not int:  # an int is an fd already open (stdout, ...)
        p, writes = _resolve(args[0]), any(c in str(args[1]) for c in "wax+") or args[2] & _WRITE_FLAGS
        # Reads outside: stdlib files only; never a directory, whose fd could serve as a dir_fd.
        if not _under(p, (_ROOT,)) and (writes or not _under(p, _READ) or os.path.isdir(p)):
            _block(f"{'writing' if writes else 'reading'} {p}: outside the sandbox directory {_ROOT}")
    elif event in _PATHS:
        for i in _PATHS[event]:
            if i < len(args) and args[i] is not None and not _under(_resolve(args[i]), (_ROOT,)):
                _block(f"{event} {args[i]!r}: outside the sandbox directory {_ROOT}")
def _no_fs_node(*a, **k): _block("os.mkfifo/os.mknod: special files are disabled in the sandbox")
os.mkfifo = os.mknod = posix.mkfifo = posix.mknod = _no_fs_node
sys.addaudithook(_guard)
del resource, posix; sys.argv = ["main.py"]
def _main(nonce=_nonce, src=_src):
    import traceback
    try:
        exec(compile(src, "main.py", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit as e:
        if e.code not in (None, 0):
            raise
        _exit(3, "sandbox: the program exited before its end\n")
    except BaseException as e:  # the user's traceback, without this prelude's frame
        traceback.print_exception(type(e), e, e.__traceback__.tb_next)
        _exit(1)
    sys.stdout.flush()
    os.write(1, b"\n" + nonce + b"\n")
del _nonce, _src
_main()
"""


@dataclass
class SandboxResult:
    passed: bool
    status: str  # one of STATUSES
    returncode: int | None
    stdout: str  # the last TAIL_CHARS characters
    stderr: str  # the last TAIL_CHARS characters
    duration_s: float
    network_namespace: bool = False  # whether `unshare -rn` isolated the network as well


@lru_cache(maxsize=1)
def _unshare_prefix() -> tuple[str, ...]:
    """`unshare -rn` if it works here (it needs unprivileged user namespaces), else nothing."""
    exe = shutil.which("unshare")
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        if exe and subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=5).returncode == 0:
            return (exe, "-rn")
    return ()


def _tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 4 * TAIL_CHARS))
        return f.read().decode("utf-8", "replace")[-TAIL_CHARS:]


def _rmtree(path: str) -> None:
    def retry(func: Any, p: str, _exc: Any) -> None:  # the code may have made its dirs read-only
        try:
            os.chmod(os.path.dirname(p), 0o700), os.chmod(p, 0o700), func(p)
        except OSError:
            pass
    shutil.rmtree(path, onerror=retry)


def _status(rc: int, ran_to_end: bool, timed_out: bool, stderr: str) -> str:
    if rc == 0 and ran_to_end and not timed_out:
        return "passed"
    if timed_out or rc == -signal.SIGXCPU:
        return "timeout"
    if rc == BLOCKED_EXIT and "\nsandbox: blocked " in stderr:
        return "blocked"
    # SIGKILL that is not our timeout is the OOM killer; SIGSEGV, a C stack overflow.
    oom = re.search(r"^MemoryError\b", stderr, re.M) or rc in (-signal.SIGKILL, -signal.SIGSEGV)
    return "memory" if oom else "failed"


def run_python(program: str, timeout_s: float = 10.0, memory_mb: int = 1024, *,
               network_namespace: bool | None = None) -> SandboxResult:
    """Run `program` in the sandbox; passed means it ran to its end and exited 0.

    network_namespace: None uses `unshare -rn` where it works, False never, True requires it.
    """
    prefix = _unshare_prefix() if network_namespace is not False else ()
    if network_namespace and not prefix:
        return SandboxResult(False, "error", None, "", "unshare -rn does not work here", 0.0)
    nonce, tmp, start = secrets.token_hex(16), tempfile.mkdtemp(prefix="distill-sandbox-"), time.monotonic()
    try:
        (work := Path(tmp) / "work").mkdir()  # the code's cwd; its captured output lives beside it
        env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work), "LANG": "C.UTF-8"}
        argv = [*prefix, sys.executable, "-I", "-S", "-X", "utf8", "-c", _PRELUDE, str(memory_mb << 20),
                str(max(1, math.ceil(timeout_s)) + 1), str(FSIZE_BYTES)]
        # Output goes to files, not pipes: a print loop cannot grow the parent's memory, and
        # RLIMIT_FSIZE caps it. Limits are set by the prelude, not preexec_fn, which is not safe
        # in a threaded parent (check_many, DuckDB, torch); the child is a fresh exec anyway.
        with open(Path(tmp) / "out", "w+b") as out, open(Path(tmp) / "err", "w+b") as err:
            try:
                proc = subprocess.Popen(argv, cwd=work, env=env, stdin=subprocess.PIPE, stdout=out,
                                        stderr=err, start_new_session=True)
            except OSError as e:
                return SandboxResult(False, "error", None, "", f"could not start the sandbox: {e}", 0.0)
            timed_out = False
            try:
                proc.communicate((nonce + "\n" + program).encode("utf-8", "surrogatepass"), timeout=timeout_s)
            except subprocess.TimeoutExpired:  # (communicate ignores a child that died before reading)
                timed_out = True
            finally:  # the whole group (children included), then the process in case it left it
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.kill(), proc.wait()
        duration, stdout, stderr = time.monotonic() - start, _tail(Path(tmp) / "out"), _tail(Path(tmp) / "err")
    finally:
        _rmtree(tmp)
    marker = "\n" + nonce + "\n"
    status = _status(proc.returncode, ran_to_end := stdout.endswith(marker), timed_out, stderr)
    stderr += f"\nsandbox: killed after the {timeout_s:g} s time limit" if status == "timeout" else ""
    return SandboxResult(status == "passed", status, proc.returncode, stdout[: -len(marker)] if ran_to_end
                         else stdout, stderr[-TAIL_CHARS:], duration, bool(prefix))


_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def extract_code(completion: str, entry_point: str) -> str:
    """The code in a completion: the first ```python block (one defining entry_point preferred)."""
    blocks = _FENCE.findall(completion)
    py = [b for lang, b in blocks if lang.lower() in ("python", "py", "python3", "")] or [b for _, b in blocks]
    defining = [b for b in py if re.search(rf"^\s*(async\s+)?def {re.escape(entry_point)}\s*\(", b, re.M)]
    return (defining or py or [completion])[0]


def humaneval_program(completion: str, prompt: str, test: str, entry_point: str) -> str:
    """prompt + completion + test + check(entry_point), as HumanEval's own harness builds it.

    A completion repeating the whole function (as chat models do) follows the prompt, a valid stub
    (signature + docstring) whose imports and helpers stay; its `if __name__ ==` demo is dropped.
    """
    code = extract_code(completion, entry_point)
    if re.search(rf"^(async\s+)?def {re.escape(entry_point)}\s*\(", code, re.M):
        body = "\n" + re.split(r"^if\s+__name__\s*==", code, maxsplit=1, flags=re.M)[0]
    elif code.strip() and not code.lstrip("\n")[:1].isspace():
        body = "".join("    " + line if line.strip() else line for line in code.splitlines(True))
    else:
        body = code  # the function body, indented, as a base model continues the prompt
    return f"{prompt}{body}\n\n{test}\n\ncheck({entry_point})\n"


def check_code(completion: str, prompt: str, test: str, entry_point: str, timeout_s: float = 10.0,
               memory_mb: int = 1024) -> SandboxResult:
    """Run a HumanEval-style completion against its tests; passed means every assert held."""
    return run_python(humaneval_program(completion, prompt, test, entry_point), timeout_s, memory_mb)


def check_many(items: Iterable[Mapping[str, Any]], workers: int | None = None) -> list[SandboxResult]:
    """check_code(**item) for every item, in parallel (each run is its own subprocess), in order."""
    items = list(items)
    with ThreadPoolExecutor(max_workers=max(1, min(workers or os.cpu_count() or 1, len(items)))) as pool:
        return list(pool.map(lambda item: check_code(**item), items))
