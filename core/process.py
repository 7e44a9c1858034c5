"""Who owns a run: host, pid and the process's start time, so a later process can tell a run whose
process died (kill -9, power loss) from one still going, even when the pid was reused."""
from __future__ import annotations

import os
import socket


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # fields after the command name; 22 is the 20th of them


def process_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid()) or '?'}"


def owner_is_gone(owner: str | None) -> bool:
    """True only when `owner` is a process of this host that no longer runs (or a new process took its pid)."""
    host, _, rest = (owner or "").partition(":")
    pid, _, ticks = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit() or ticks == "?" or not os.path.isdir("/proc/self"):
        return False  # another machine, or no /proc to ask: it may still be running
    return _start_ticks(int(pid)) != ticks
