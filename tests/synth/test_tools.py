"""Tools: safe calculator, limited Python sandbox, function-call schema check, BFCL AST match."""
import json

import pytest

from synth.tools import DEFAULT_TOOLS, bfcl_match, calculator, check_call_against_schema, python_sandbox


@pytest.mark.parametrize("expr, expected", [
    ("22 - 11", "11"), ("22 / 2", "11"), ("7 / 2", "3.5"), ("7 // 2", "3"), ("7 % 3", "1"),
    ("2 ** 10", "1024"), ("-(3 + 4) * 2", "-14"), ("sqrt(16) + 1", "5"), ("3 × 4", "12"),
    ("round(2 * pi, 2)", "6.28"), ("max(3, 9) - min(1, 2)", "8"),
])
def test_calculator_arithmetic(expr, expected):
    assert calculator(expr) == expected


@pytest.mark.parametrize("expr", [
    "__import__('os').system('echo hi')", "().__class__.__bases__", "open('/etc/passwd')",
    "'a' * 10", "x + 1", "lambda: 1", "[1, 2]", "sqrt(x=4)",
])
def test_calculator_refuses_anything_but_arithmetic(expr):
    assert calculator(expr).startswith("error:")


@pytest.mark.parametrize("expr, why", [
    ("10 ** 10 ** 10", "too large"), ("9 ** 400", "too large"), ("factorial(10000)", "too large"),
    ("1 / 0", "division by zero"), ("2 ^ 3", "**"), ("(1 +", "syntax"), ("", "empty"),
    ("1" + "+1" * 400, "too long"), ("sqrt(-1)", "error"),
])
def test_calculator_limits_come_back_as_error_strings(expr, why):
    out = calculator(expr)
    assert out.startswith("error:") and why in out


def test_sandbox_runs_code_with_the_standard_library():
    assert python_sandbox("import math, json\nprint(json.dumps([math.factorial(5)]))") == "[120]"
    assert python_sandbox("pass") == "(no output)"


def test_sandbox_reports_the_traceback_without_its_own_frames():
    out = python_sandbox("print('partial')\nraise ValueError('boom')")
    assert out.startswith("partial\nstderr:") and "ValueError: boom" in out and "<string>" not in out


def test_sandbox_times_out_and_kills_the_process():
    assert python_sandbox("while True:\n    pass", timeout_s=1) == "error: timeout"


def test_sandbox_memory_limit():
    assert python_sandbox("x = bytearray(1 << 30)\nprint(len(x))", memory_mb=128) == "error: memory"


def test_sandbox_has_no_network():
    out = python_sandbox("import socket\ns = socket.create_connection(('1.1.1.1', 80), timeout=2)\nprint('connected')")
    assert "connected" not in out.split("stderr:")[0] and "Network is unreachable" in out


def test_sandbox_cannot_see_the_parent_environment(monkeypatch):
    monkeypatch.setenv("DISTILL_TEST_SECRET", "hunter2")
    out = python_sandbox("import os\nprint(sorted(os.environ))\nprint(os.environ.get('DISTILL_TEST_SECRET'))")
    assert "hunter2" not in out and "DISTILL_TEST_SECRET" not in out


@pytest.mark.parametrize("code, why", [
    ("import subprocess\nsubprocess.run(['echo', 'spawned'])", "Operation not permitted"),
    ("import os\nprint('exit status', os.system('echo spawned'))", "exit status"),
    ("open('/tmp/sandbox-escape-test', 'w').write('spawned')", "No such file or directory"),
    ("print(open('/etc/hostname').read(), 'spawned')", "No such file or directory"),
])
def test_sandbox_blocks_processes_and_files_outside_its_directory(code, why):
    out = python_sandbox(code)
    assert "spawned" not in out.split("stderr:")[0] and why in out, out


def test_sandbox_output_is_truncated_and_files_stay_inside():
    out = python_sandbox("for i in range(100000):\n    print(i)")
    assert out.startswith("[output truncated]") and out.endswith("99999") and len(out) < 5000
    assert python_sandbox("open('a.txt', 'w').write('hi')\nprint(open('a.txt').read())") == "hi"


def test_default_tools_have_function_schemas():
    calc = DEFAULT_TOOLS["calculator"]
    assert calc.arg == "expression" and calc.run("1 + 1") == "2"
    schema = calc.schema()
    assert schema["type"] == "function" and schema["function"]["name"] == "calculator"
    assert schema["function"]["parameters"]["required"] == ["expression"]
    assert DEFAULT_TOOLS["python"].run("print(6 * 7)") == "42"


# ---- function calls on real BFCL rows -----------------------------------------------------

@pytest.fixture(scope="module")
def bfcl_rows():
    pytest.importorskip("bfcl_eval")
    from prompts.bfcl import load_bfcl
    return {cat: load_bfcl(cat) for cat in ("simple", "parallel", "multiple", "irrelevance")}


def _accepted(spec: dict) -> dict:
    """One call BFCL accepts: the first listed value of each argument, optional ones left out."""
    out = {}
    for arg, values in spec.items():
        value = next((v for v in values if v != ""), None)
        if value is None and "" in values:
            continue
        if isinstance(value, dict) and all(isinstance(v, list) for v in value.values()):
            value = _accepted(value)
        elif isinstance(value, list):
            value = [_accepted(v) if isinstance(v, dict) else v for v in value]
        out[arg] = value
    return out


def _gold_calls(row) -> list[dict]:
    return [{"name": name, "arguments": _accepted(spec)} for call in json.loads(row.gold) for name, spec in call.items()]


def test_schema_check_on_real_bfcl_rows(bfcl_rows):
    row = bfcl_rows["simple"][0]  # calculate_triangle_area(base: integer, height: integer, unit: string)
    fns = row.meta["functions"]
    assert check_call_against_schema({"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}, fns) == (True, "ok")
    for call, why in [({"name": "area", "arguments": {}}, "unknown function"),
                      ({"name": "calculate_triangle_area", "arguments": {"base": 10}}, "missing required"),
                      ({"name": "calculate_triangle_area", "arguments": {"base": "10", "height": 5}}, "not of type integer"),
                      ({"name": "calculate_triangle_area", "arguments": {"base": True, "height": 5}}, "not of type integer"),
                      ({"name": "calculate_triangle_area", "arguments": {"base": 1, "height": 5, "color": "red"}}, "unexpected"),
                      ({"name": "calculate_triangle_area", "arguments": "base=10"}, "JSON object")]:
        ok, detail = check_call_against_schema(call, fns)
        assert not ok and why in detail, (call, detail)
    # The gold calls of (almost) every simple row satisfy their own schemas ("float" takes ints).
    passing = [all(check_call_against_schema(c, r.meta["functions"])[0] for c in _gold_calls(r)) for r in bfcl_rows["simple"]]
    assert sum(passing) >= len(passing) - 2


def test_bfcl_match_accepts_gold_and_rejects_changes(bfcl_rows):
    for category in ("simple", "parallel", "multiple"):
        for row in bfcl_rows[category]:
            assert bfcl_match(_gold_calls(row), row.gold), row.meta["bfcl_id"]
    row = bfcl_rows["simple"][0]  # gold: base [10], height [5], unit ["units", ""]
    call = {"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}
    assert bfcl_match(call, row.gold)  # the optional unit left out
    assert bfcl_match({**call, "arguments": {"base": 10.0, "height": 5, "unit": "Units"}}, row.gold)
    assert not bfcl_match({**call, "arguments": {"base": 10, "height": 6}}, row.gold)
    assert not bfcl_match({**call, "arguments": {"base": 10}}, row.gold)
    assert not bfcl_match({**call, "arguments": {"base": True, "height": 5}}, row.gold)
    assert not bfcl_match({**call, "name": "area"}, row.gold)
    assert not bfcl_match([call, call], row.gold) and not bfcl_match(None, row.gold)
    other = bfcl_rows["simple"][1]
    assert not bfcl_match(_gold_calls(other), row.gold)


def test_bfcl_match_parallel_order_and_no_call(bfcl_rows):
    row = next(r for r in bfcl_rows["parallel"] if len(json.loads(r.gold)) == 2)
    calls = _gold_calls(row)
    assert bfcl_match(list(reversed(calls)), row.gold) and not bfcl_match(calls[:1], row.gold)
    irrelevant = bfcl_rows["irrelevance"][0]
    assert irrelevant.gold == "[]" and bfcl_match([], irrelevant.gold)
    assert not bfcl_match({"name": irrelevant.meta["functions"][0]["name"], "arguments": {}}, irrelevant.gold)
    assert bfcl_match({"name": "anything", "arguments": {}}, "") and not bfcl_match([], "")


def test_bfcl_match_normalises_strings_like_bfcl():
    gold = json.dumps([{"book": {"date": ["April 1, 2024"], "tags": [["a-b", "C"]], "when": ["", None]}}])
    assert bfcl_match({"name": "book", "arguments": {"date": "april 1 2024", "tags": ["AB", "c"]}}, gold)
    assert not bfcl_match({"name": "book", "arguments": {"date": "April 2, 2024", "tags": ["ab", "c"]}}, gold)
    assert not bfcl_match({"name": "book", "arguments": {"date": "April 1, 2024", "tags": ["c", "ab"]}}, gold)
