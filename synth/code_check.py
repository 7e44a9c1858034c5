"""Judge teacher-written code against unit tests from outside the code's own process.

HumanEval's harness runs the tests in the same interpreter as the code, so the code can forge a
pass (read the harness's secret, exit 0 early, patch `assert`). Here two sandboxed processes
(synth/sandbox.py) take part and neither can reach the other's memory:
  - the candidate runs `prompt + completion` and then only answers calls: arguments in, return
    value out, one JSON line each, over two pipes;
  - the judge runs `prompt + test` with `candidate` bound to a proxy that makes those calls, and
    prints its verdict to its own stdout, a file the candidate has no handle to.
So the code can only influence the values it returns: a pass needs right answers. Values cross
as tagged JSON (None, bool, int, float, str, bytes, list, tuple, dict, set, frozenset); any other
return type fails the call. Prompts and tests come from the pool (the user's data), never from a
teacher.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Mapping

from synth.sandbox import TAIL_CHARS, SandboxResult, check_sandbox, output_tail, sandbox_command, stop_process

VERDICT = "distill-judge: every test passed"

# Shared by both sides: values as tagged JSON (a dict is always tagged, so no plain object is ambiguous).
_CODEC = r'''
import json
def enc(v):
    if v is None or isinstance(v, (bool, int, float, str)): return v
    if isinstance(v, list): return [enc(x) for x in v]
    for kind in (tuple, set, frozenset):
        if isinstance(v, kind): return {"t": kind.__name__, "v": [enc(x) for x in v]}
    if isinstance(v, dict): return {"t": "dict", "v": [[enc(k), enc(x)] for k, x in v.items()]}
    if isinstance(v, bytes): return {"t": "bytes", "v": v.hex()}
    raise TypeError(f"a value of type {type(v).__name__} cannot cross the sandbox boundary")
def dec(v):
    if isinstance(v, list): return [dec(x) for x in v]
    if not isinstance(v, dict): return v
    kind, items = v["t"], v["v"]
    if kind == "bytes": return bytes.fromhex(items)
    if kind == "dict": return {dec(k): dec(x) for k, x in items}
    return {"tuple": tuple, "set": set, "frozenset": frozenset}[kind](dec(x) for x in items)
'''

# The candidate's side: define the function, then answer calls on stdin with lines on the saved stdout.
_SERVER = _CODEC + r'''
import os, sys
_rx, _tx = os.fdopen(0, "r"), os.fdopen(os.dup(1), "w")
os.dup2(2, 1)  # the code's own prints go to stderr, not into the answers
ns = {"__name__": "__main__"}
exec(compile(SOURCE, "main.py", "exec"), ns)
fn = ns[ENTRY]
for line in _rx:
    req = json.loads(line)
    try:
        out = {"value": enc(fn(*dec(req["args"]), **{k: dec(x) for k, x in req["kwargs"].items()}))}
    except BaseException as e:
        out = {"error": f"{type(e).__name__}: {e}"[:2000]}
    _tx.write(json.dumps(out) + "\n"); _tx.flush()
'''

# The judge's side: the pool's prompt (helpers the tests use) and tests, `candidate` a proxy.
_JUDGE = _CODEC + r'''
import os, sys
_tx, _rx = os.fdopen(TX, "w"), os.fdopen(RX, "r")
class CandidateFailed(Exception):
    pass
def candidate(*args, **kwargs):
    _tx.write(json.dumps({"args": enc(list(args)), "kwargs": {k: enc(x) for k, x in kwargs.items()}}) + "\n")
    _tx.flush()
    line = _rx.readline()
    if not line:
        raise CandidateFailed("the candidate's process ended before it answered")
    msg = json.loads(line)
    if "error" in msg:
        raise CandidateFailed(msg["error"])
    return dec(msg["value"])
ns = {"__name__": "__judge__"}
try:
    exec(compile(PROMPT, "prompt.py", "exec"), ns)
except SyntaxError:  # a prompt that ends at the signature: give the stub a body
    exec(compile(PROMPT + "    pass\n", "prompt.py", "exec"), ns)
ns[ENTRY] = candidate  # as in HumanEval's harness, where the completion replaces the prompt's stub
exec(compile(TEST, "test.py", "exec"), ns)
ns["check"](candidate)
print(VERDICT, flush=True)
'''

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def extract_code(completion: str, entry_point: str) -> str:
    """The code in a completion: the first ```python block (one defining entry_point preferred)."""
    blocks = _FENCE.findall(completion)
    py = [b for lang, b in blocks if lang.lower() in ("python", "py", "python3", "")] or [b for _, b in blocks]
    defining = [b for b in py if re.search(rf"^\s*(async\s+)?def {re.escape(entry_point)}\s*\(", b, re.M)]
    return (defining or py or [completion])[0]


def candidate_source(completion: str, prompt: str, entry_point: str) -> str:
    """prompt + completion, as HumanEval's harness joins them (without the tests).

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
    return f"{prompt}{body}\n"


def _program(template: str, **values: object) -> bytes:
    head = "".join(f"{name} = {value!r}\n" for name, value in values.items())
    return (head + template).encode("utf-8", "surrogatepass")


def _status(judge_rc: int | None, verdict: bool, timed_out: bool, stderr: str) -> str:
    if verdict and judge_rc == 0:
        return "passed"
    if timed_out:
        return "timeout"
    if "MemoryError" in stderr:
        return "memory"
    return "failed"


def check_code(completion: str, prompt: str, test: str, entry_point: str, timeout_s: float = 10.0,
               memory_mb: int = 1024) -> SandboxResult:
    """Run a HumanEval-style completion against its tests; passed means the judge saw every assert hold."""
    check_sandbox()
    cpu_s = max(1, math.ceil(timeout_s)) + 1
    to_cand_r, to_cand_w = os.pipe()
    to_judge_r, to_judge_w = os.pipe()
    server = _program(_SERVER, SOURCE=candidate_source(completion, prompt, entry_point), ENTRY=entry_point)
    judge = _program(_JUDGE, PROMPT=prompt, TEST=test, ENTRY=entry_point, TX=to_cand_w, RX=to_judge_r,
                     VERDICT=VERDICT)
    cand_argv, cand_fds = sandbox_command(server, memory_mb, cpu_s)
    judge_argv, judge_fds = sandbox_command(judge, memory_mb, cpu_s)
    tmp, start, procs = Path(tempfile.mkdtemp(prefix="distill-check-")), time.monotonic(), []
    try:
        files = {name: open(tmp / name, "w+b") for name in ("cand_err", "judge_out", "judge_err")}
        try:
            procs.append(subprocess.Popen(cand_argv, stdin=to_cand_r, stdout=to_judge_w, stderr=files["cand_err"],
                                          pass_fds=cand_fds, start_new_session=True, env={"LANG": "C.UTF-8"}))
            procs.append(subprocess.Popen(judge_argv, stdin=subprocess.DEVNULL, stdout=files["judge_out"],
                                          stderr=files["judge_err"], pass_fds=(*judge_fds, to_cand_w, to_judge_r),
                                          start_new_session=True, env={"LANG": "C.UTF-8"}))
        except OSError as e:
            return SandboxResult(False, "error", None, "", f"could not start the sandbox: {e}", 0.0)
        finally:
            for fd in (to_cand_r, to_cand_w, to_judge_r, to_judge_w, *cand_fds, *judge_fds):
                os.close(fd)
            for f in files.values():
                f.close()
        timed_out = False
        try:
            procs[-1].wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            for proc in procs:
                stop_process(proc)
        judge_out = output_tail(tmp / "judge_out")
        stderr = (output_tail(tmp / "judge_err") + "\n--- candidate ---\n" + output_tail(tmp / "cand_err"))[-TAIL_CHARS:]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    judge_rc = procs[-1].returncode if len(procs) == 2 else None
    status = _status(judge_rc, VERDICT in judge_out, timed_out, stderr)
    stderr += f"\nsandbox: killed after the {timeout_s:g} s time limit" if status == "timeout" else ""
    return SandboxResult(status == "passed", status, judge_rc, "", stderr[-TAIL_CHARS:], time.monotonic() - start)


def check_many(items: Iterable[Mapping[str, Any]], workers: int | None = None) -> list[SandboxResult]:
    """check_code(**item) for every item, in parallel (each run is its own processes), in order."""
    items = list(items)
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers or os.cpu_count() or 1, len(items)))) as pool:
        return list(pool.map(lambda item: check_code(**item), items))
