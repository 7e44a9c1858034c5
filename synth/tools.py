"""Tools a teacher may call during ReAct rollouts, and checks of function calls.

Tools never raise to the agent: every failure comes back as an "error: ..." string, because
an observation the model can read (and recover from) is part of a useful trajectory.
"""
from __future__ import annotations

import ast
import json
import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable

# ---- calculator ---------------------------------------------------------------------------

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt, "log": math.log, "log10": math.log10, "exp": math.exp, "sin": math.sin,
    "cos": math.cos, "tan": math.tan, "abs": abs, "round": round, "floor": math.floor,
    "ceil": math.ceil, "min": min, "max": max, "factorial": math.factorial}
_CONSTS = {"pi": math.pi, "e": math.e}
_MAX_BITS = 1024  # results beyond ~1e308 are refused: no model needs them, and they cost CPU


def _check_size(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > _MAX_BITS:
        raise ValueError("result too large")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("result is not finite")
    return value


def _eval(node: ast.AST) -> Any:
    """Evaluate a whitelisted arithmetic AST; anything else (names, attributes, calls to
    non-math functions, strings) is refused, so `__import__('os')` never runs."""
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTS:
        return _CONSTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            # Estimate the result's size before computing it: 10**10**10 must not hang.
            if abs(right) > 10_000 or (abs(left) > 1 and abs(right) * math.log2(abs(left)) > _MAX_BITS):
                raise ValueError("exponent too large")
        return _check_size(_BINOPS[type(node.op)](left, right))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
        raise ValueError("use ** for powers")
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
            and not node.keywords):
        args = [_eval(a) for a in node.args]
        if node.func.id == "factorial" and (not args or abs(args[0]) > 500):
            raise ValueError("factorial argument too large")
        return _check_size(_FUNCS[node.func.id](*args))
    raise ValueError(f"unsupported expression {ast.unparse(node)[:40]!r}: only numbers, operators and math functions")


def _format_number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # "22/2" reads as 11, the way gold answers are written
    return f"{value:.12g}" if isinstance(value, float) else str(value)


def calculator(expression: str) -> str:
    """Safe arithmetic: numbers, + - * / // % **, unary signs, parentheses, pi, e, sqrt & co."""
    text = expression.strip().replace("×", "*").replace("÷", "/").replace("−", "-")
    if not text:
        return "error: empty expression"
    if len(text) > 500:
        return "error: expression too long"
    try:
        return _format_number(_eval(ast.parse(text, mode="eval")))
    except ZeroDivisionError:
        return "error: division by zero"
    except SyntaxError:
        return "error: invalid syntax (write a plain arithmetic expression, e.g. (3 + 4) * 2)"
    except (ValueError, TypeError, OverflowError, RecursionError) as err:
        return f"error: {err}"


# ---- python sandbox (synth/sandbox.py: an OS boundary, bubblewrap) ----------------------

def python_sandbox(code: str, timeout_s: float = 5, memory_mb: int = 256) -> str:
    """Run Python `code` in the sandbox of synth/sandbox.py; returns stdout (+ stderr tail) or an error."""
    from synth.sandbox import TAIL_CHARS, run_python

    result = run_python(code, timeout_s=timeout_s, memory_mb=memory_mb)
    if result.status in ("timeout", "memory"):
        return f"error: {result.status}"
    text = result.stdout.rstrip("\n")
    if len(result.stdout) >= TAIL_CHARS - 64:  # the sandbox keeps the tail of a long output
        text = "[output truncated]...\n" + text
    if result.stderr.strip():
        text += ("\n" if text else "") + "stderr: " + result.stderr.strip()[-_STDERR_TAIL:]
    return text or "(no output)"


_STDERR_TAIL = 1500


# ---- tool registry ------------------------------------------------------------------------

@dataclass(frozen=True)
class Tool:
    """A tool with one string argument (the ReAct text protocol passes one input)."""

    name: str
    description: str
    parameters: dict  # JSON schema of the arguments object
    fn: Callable[[str], str]

    @property
    def arg(self) -> str:
        return self.parameters["required"][0]

    def run(self, text: str) -> str:
        try:
            return str(self.fn(text))
        except Exception as err:  # a tool bug must reach the agent as an observation, not a crash
            return f"error: {type(err).__name__}: {err}"

    def schema(self) -> dict:
        """The function schema in the format transformers chat templates and TRL expect."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


def _one_string(name: str, description: str) -> dict:
    return {"type": "object", "properties": {name: {"type": "string", "description": description}},
            "required": [name]}


DEFAULT_TOOLS: dict[str, Tool] = {
    "calculator": Tool("calculator", "Evaluate an arithmetic expression, e.g. 22 - 11 or sqrt(2) * 3.",
                       _one_string("expression", "The arithmetic expression."), calculator),
    "python": Tool("python", "Run a short Python program (standard library only) and return what it prints.",
                   _one_string("code", "The Python source; print the result."), python_sandbox),
}

# ---- function-call schema check -----------------------------------------------------------
# BFCL writes JSON-schema types its own way ("dict", "float", "tuple", "any").
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "float": (int, float), "number": (int, float),
    "boolean": (bool,), "array": (list,), "tuple": (list,), "dict": (dict,), "object": (dict,),
    "null": (type(None),)}


def _type_ok(value: Any, spec: dict) -> bool:
    kind = spec.get("type", "any")
    if kind == "any" or kind not in _TYPES:
        return True
    if isinstance(value, bool) and kind not in ("boolean", "any"):
        return False  # bool is an int subclass; True is not an integer argument
    if not isinstance(value, _TYPES[kind]):
        return False
    if kind in ("array", "tuple") and isinstance(spec.get("items"), dict):
        return all(_type_ok(v, spec["items"]) for v in value)
    return True


def check_call_against_schema(call: dict, functions: list[dict]) -> tuple[bool, str]:
    """Is `{"name", "arguments"}` a valid call of one of `functions` (BFCL/OpenAI schemas)?"""
    schemas = {f.get("function", f)["name"]: f.get("function", f) for f in functions}
    name, args = call.get("name"), call.get("arguments")
    if name not in schemas:
        return False, f"unknown function {name!r}: expected one of {sorted(schemas)}"
    if not isinstance(args, dict):
        return False, "arguments must be a JSON object"
    params = schemas[name].get("parameters") or {}
    props = params.get("properties", {})
    missing = [r for r in params.get("required", []) if r not in args]
    if missing:
        return False, f"missing required argument(s) {missing}"
    for key, value in args.items():
        if key not in props:
            return False, f"unexpected argument {key!r}"
        if value is None and key not in params.get("required", []):
            continue  # null for an optional argument means "use the default" (BFCL golds do this)
        if not _type_ok(value, props[key]):
            return False, f"argument {key!r}={value!r} is not of type {props[key].get('type')}"
        enum = props[key].get("enum")
        # BFCL puts an array's enum on the array itself: it constrains the items.
        items = value if isinstance(value, list) and props[key].get("type") in ("array", "tuple") else [value]
        if enum is not None and any(v not in enum for v in items):
            return False, f"argument {key!r}={value!r} is not one of {enum}"
    return True, "ok"


# ---- BFCL AST match -----------------------------------------------------------------------

def _norm(text: str) -> str:
    # BFCL's standardize_string: "April 1, 2024" and "april 1 2024" are the same answer.
    return re.sub(r"[ ,./\-_*^]", "", text).lower().replace("'", '"')


def _same(value: Any, accepted: Any) -> bool:
    if isinstance(accepted, dict):
        if all(isinstance(v, list) for v in accepted.values()):  # each key lists its accepted values
            return isinstance(value, dict) and _args_match(value, accepted)
        return value == accepted  # deeper dicts are literal values, as in BFCL's dict_checker
    if isinstance(accepted, list):
        return (isinstance(value, (list, tuple)) and len(value) == len(accepted)
                and all(_same(v, a) for v, a in zip(value, accepted)))
    if isinstance(accepted, bool) or isinstance(value, bool):
        return type(value) is type(accepted) and value == accepted
    if isinstance(accepted, (int, float)):
        return isinstance(value, (int, float)) and value == accepted  # 5 == 5.0, as BFCL allows
    if isinstance(accepted, str):
        return isinstance(value, str) and _norm(value) == _norm(accepted)
    return value == accepted


def _args_match(args: dict, spec: dict) -> bool:
    """Each given arg is one of its accepted values; each omitted one accepts "" (optional)."""
    for key, value in args.items():
        accepted = spec.get(key)
        if not isinstance(accepted, list) or not any(a != "" and _same(value, a) for a in accepted):
            return False
    return all("" in accepted for key, accepted in spec.items() if key not in args)


def bfcl_match(call: dict | list[dict] | None, gold_json: str) -> bool:
    """AST-style match of call(s) `{"name", "arguments"}` against BFCL possible answers.

    gold is `[{fn: {arg: [accepted values]}}, ...]` (several calls match in any order), "[]"
    where no call is right (irrelevance), or "" where any call is right (relevance).
    """
    calls = [] if call is None else [call] if isinstance(call, dict) else list(call)
    if gold_json == "":
        return bool(calls)
    gold = json.loads(gold_json)
    if len(calls) != len(gold):
        return False
    unmatched = list(range(len(calls)))
    for expected in gold:
        (name, spec), = expected.items()
        hit = next((i for i in unmatched if calls[i].get("name") == name
                    and isinstance(calls[i].get("arguments"), dict)
                    and _args_match(calls[i]["arguments"], spec)), None)
        if hit is None:
            return False
        unmatched.remove(hit)
    return True
