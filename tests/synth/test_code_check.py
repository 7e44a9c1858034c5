"""Verdicts are decided outside the code's process (synth/code_check.py): a wrong solution cannot
forge a pass, whatever it does in its own interpreter."""
from __future__ import annotations

import pytest

from synth.code_check import VERDICT, candidate_source, check_code, check_many

PROMPT = "def add(a, b):\n    \"\"\"Return a + b.\"\"\"\n"
TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n    " \
       "assert add(10, 5) == 15\n"

# Each returns a wrong answer (or none) and tries to be marked passed anyway.
FORGERIES = {
    "exit 0 at import": "import os\nos._exit(0)",
    "the issue's forged pass: the harness's nonce from its frame": (
        "def add(a, b):\n    return None\nimport sys, os\nn = sys._getframe(1).f_locals.get('nonce')\nif n:\n"
        "    sys.stdout.flush(); os.write(1, b'\\n' + n + b'\\n')\n    os._exit(0)\n"),
    "sys.exit(0) at import": "import sys\nsys.exit(0)",
    "exit 0 inside the call": "def add(a, b):\n    import os; os._exit(0)",
    "steal a nonce from the caller's frame": (
        "import sys, os\nf = sys._getframe()\nwhile f:\n    for v in list(f.f_locals.values()) + list(f.f_globals.values()):\n"
        "        if isinstance(v, (str, bytes)) and len(v) >= 16:\n            os.write(1, (v if isinstance(v, bytes) "
        "else v.encode()) + b'\\n')\n    f = f.f_back\nos._exit(0)"),
    "print the verdict": f"print({VERDICT!r}, flush=True)\nimport sys; print({VERDICT!r}, file=sys.stderr)\n"
                         "def add(a, b):\n    return None",
    "write the verdict to every fd": "import os\nfor fd in range(64):\n    try: os.write(fd, "
                                     f"({VERDICT!r} + '\\n').encode())\n    except OSError: pass\n"
                                     "def add(a, b):\n    return None",
    "forge answers on the channel": "import os\nfor fd in range(3, 64):\n    try: os.write(fd, b'{\"value\": 5}\\n' * 50)\n"
                                    "    except OSError: pass\ndef add(a, b):\n    return None",
    "an object equal to everything": "class Yes:\n    def __eq__(self, other): return True\n"
                                     "def add(a, b):\n    return Yes()",
    "patch AssertionError": "import builtins\nbuiltins.AssertionError = type('Quiet', (Exception,), {})\n"
                            "def add(a, b):\n    return None",
    "patch json in its own process": "import json\njson.dumps = lambda *a, **k: '{\"value\": 5}'\n"
                                     "def add(a, b):\n    return None",
    "kill every process it can see": "import os, signal\nos.kill(-1, signal.SIGKILL)",
    "kill its parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
    "pidfd kill of its parent": "import os, signal\nsignal.pidfd_send_signal(os.pidfd_open(os.getppid()), signal.SIGKILL)",
    "look for the tests to hard-code": "import os\nfound = [os.path.join(d, f) for d, _, fs in os.walk('/') "
                                       "for f in fs if f.endswith('.py') and 'check(' in open(os.path.join(d, f), "
                                       "errors='ignore').read()[:20000]]\ndef add(a, b):\n    return len(found)",
    "hang forever": "while True:\n    pass",
    "raise SystemExit in the call": "def add(a, b):\n    raise SystemExit(0)",
    "return the wrong type": "def add(a, b):\n    return str(a + b)",
    "crash the interpreter": "import ctypes\nctypes.string_at(0)",
    "exhaust memory": "x = bytearray(8 << 30)",
    "replace the function after the first call": "calls = []\ndef add(a, b):\n    calls.append(1)\n"
                                                 "    return a + b if len(calls) == 1 else None",
}


@pytest.mark.parametrize("name", FORGERIES, ids=list(FORGERIES))
def test_a_forged_pass_is_a_fail(name):
    result = check_code(FORGERIES[name], PROMPT, TEST, "add", timeout_s=5, memory_mb=512)
    assert not result.passed and result.status != "passed", result


def test_a_right_answer_passes_and_a_wrong_one_fails():
    assert check_code("    return a + b\n", PROMPT, TEST, "add").status == "passed"
    wrong = check_code("    return a - b\n", PROMPT, TEST, "add")
    assert wrong.status == "failed" and "AssertionError" in wrong.stderr


def test_values_keep_their_python_types():
    prompt = "def f(x):\n"
    test = ("def check(candidate):\n    assert candidate(1) == (1, [2.5, None], {'a': {3}}, frozenset({4}), b'x', True)\n"
            "    assert type(candidate(1)[0]) is int and candidate(1)[-1] is True\n")
    code = "    return (1, [2.5, None], {'a': {3}}, frozenset({4}), b'x', True)\n"
    assert check_code(code, prompt, test, "f").status == "passed"


def test_prints_do_not_disturb_the_answers():
    code = "    print('noise', a, b)\n    return a + b\n"
    assert check_code(code, PROMPT, TEST, "add").status == "passed"


def test_candidate_source_keeps_the_prompt_and_drops_a_demo():
    full = "```python\ndef add(a, b):\n    return a + b\n\nif __name__ == '__main__':\n    print(add(1, 2))\n```"
    src = candidate_source(full, PROMPT, "add")
    assert src.startswith(PROMPT) and "__main__" not in src and "return a + b" in src


def test_check_many_keeps_order():
    good = dict(prompt=PROMPT, completion="    return a + b\n", test=TEST, entry_point="add")
    bad = {**good, "completion": "    return a - b\n"}
    assert [r.status for r in check_many([good, bad, good, bad], workers=2)] == ["passed", "failed"] * 2
    assert check_many([]) == []
