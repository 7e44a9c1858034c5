"""Plain math notation and values for curation/math_answers.py: text -> sympy -> exact values.

A span becomes solutions (tuples) of scalars; a scalar is a sympy expression reduced to its values
at fixed integer points, so equivalence and the majority-vote key are one computation (simplify()
only when too few points evaluate). Split from math_answers.py for size; see its docstring for why
this is not math-verify alone.
"""
from __future__ import annotations

import functools
import re

import sympy as sp
from sympy.parsing.sympy_parser import (convert_xor, implicit_multiplication_application, parse_expr,
                                        rationalize, standard_transformations)

FUNCS = {"C": sp.binomial, "binomial": sp.binomial, "binom": sp.binomial, "floor": sp.floor, "ceil": sp.ceiling,
          "ceiling": sp.ceiling, "sqrt": sp.sqrt, "cbrt": sp.cbrt, "log": sp.log, "ln": sp.log, "exp": sp.exp,
          "sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "abs": sp.Abs, "Sum": sp.Sum, "factorial": sp.factorial,
          "pi": sp.pi, "oo": sp.oo, "max": sp.Max, "min": sp.Min}
STOP = set("a an the is are was be of to in on at by for and or as it its if so no not with that this than then there "
            "their which when where from all any each every only must can has have such we".split())

# ------------------------------------------------------------------ text -> plain math notation
_WORDS = {w: str(i) for i, w in enumerate("one two three four five six seven eight nine ten eleven twelve".split(), 1)}
_UNICODE = {"−": "-", "–": "-", "—": "-", "×": "*", "·": "*", "⋅": "*", "∗": "*", "÷": "/", "²": "^2", "³": "^3",
            "π": "pi", "∞": "oo", "…": "...", "\u2009": " ", "\u00a0": " ", "’": "'", "⌊": "floor(", "⌋": ")"}
_TEX = {"cdot": "*", "times": "*", "div": "/", "pm": "±", "mp": "∓", "le": "≤", "leq": "≤", "ge": "≥", "geq": "≥",
        "neq": "≠", "ne": "≠", "infty": "oo", "lfloor": "floor(", "rfloor": ")", "lceil": "ceiling(", "rceil": ")",
        "ldots": "...", "cdots": "...", "dots": "...", "equiv": "≡", "bmod": " mod ", "pmod": " mod ", "mod": " mod ",
        "in": "∈", "approx": "≈", "mid": "|", "vert": "|", "to": "→", "%": "%"}


def group(s: str, i: int) -> tuple[str, int] | None:
    """The {...} group (or single character) at s[i], spaces skipped -> (content, index after it)."""
    i += len(s[i:]) - len(s[i:].lstrip(" "))
    if i < len(s) and s[i] != "{":
        return s[i], i + 1
    depth = 0
    for j in range(i, len(s)):
        if (depth := depth + (s[j] == "{") - (s[j] == "}")) == 0:
            return s[i + 1:j], j + 1
    return None


def _delatex(s: str) -> str:
    """LaTeX -> plain: \\frac{a}{b} -> ((a)/(b)), \\binom -> C(,), x^{n-1} -> x^(n-1), a_{10} -> a_10."""
    s = re.sub(r"\\lim_\{[^{}]*\}|\\(?:left|right|[bB]ig+[lr]?|displaystyle|quad|qquad)\b|\\[,;:! ]|\$|\\[()\[\]]", " ",
               s.replace("\\{", "⦃").replace("\\}", "⦄"))  # ⦃⦄: literal set braces outlive the grouping-brace rewrites
    s = re.sub(r"\\(?:text|mathrm|mathbf|mathit|operatorname|textbf|mbox)\s*\{([^{}]*)\}", r" \1 ", s)
    s = re.sub(r"\\(?!(?:[dt]?frac|[dt]?binom|sqrt)\b)([A-Za-z]+|%)", lambda m: _TEX.get(m[1], m[1]), s)
    out, i = "", 0
    while m := re.search(r"\\[dt]?(frac|binom|sqrt)|[\^_](?=\s*\{)", s[i:]):
        out, i = out + s[i:i + m.start()], i + m.end()
        if m[0] in "^_":
            g = group(s, i) or ("", i)
            inner, i = _delatex(g[0]), g[1]
            out += m[0] + (inner if m[0] == "_" and inner.isalnum() else f"({inner})")
            continue
        root = None
        if m[1] == "sqrt" and s[i:i + 1] == "[" and "]" in s[i:]:
            root, i = s[i + 1:s.index("]", i)], s.index("]", i) + 1
        args = []
        for _ in range(1 if m[1] == "sqrt" else 2):
            if (g := group(s, i)) is None:
                return out + s[i:]
            args, i = args + [_delatex(g[0])], g[1]
        out += (f" C({args[0]}, {args[1]})" if m[1] == "binom" else f"(({args[0]})/({args[1]}))" if m[1] == "frac"
                else f"({args[0]})^(1/({root}))" if root else f"sqrt({args[0]})")
    return (out + s[i:]).replace("⦃", "{").replace("⦄", "}")


def plain(text: str) -> str:
    for a, b in _UNICODE.items():
        text = text.replace(a, b)
    text = re.sub(r"√\s*(\d+|[A-Za-z]|\([^()]*\))", r"sqrt(\1)", _delatex(text))
    text = re.sub(r"\b(\w)\s+factorial(?:\s*\(\s*\1\s*!\s*\))?", r"\1!", text)  # "n factorial (n!)" -> n!
    for words, op in (("less than or equal to", "≤"), ("greater than or equal to", "≥"), ("less than", "<"),
                      ("greater than", ">")):  # "x(n) is less than y(n-1)" -> the relation
        text = re.sub(rf"\bis (?:strictly )?{words}\b", op, text)
    text = re.sub(r"(\b(?:an?|one|1|the|that|this|each|any|real|integer|complex|double|[a-z]+-valued)\s+)?\bzero\b",
                  lambda m: m[0] if m[1] else "0", text, flags=re.I)  # the number, not the noun ("a real zero")
    text = re.sub(r"\b(" + "|".join(_WORDS) + r")\b", lambda m: _WORDS[m[1].lower()], text, flags=re.I)
    return re.sub(r"(?<=\d),(?=\d{3}(?:,\d{3})*(?!\d))", "", text)  # thousands separators: 2,001,000 (not 1,2)



# ------------------------------------------------------------------ values
_T = standard_transformations + (convert_xor, implicit_multiplication_application, rationalize)
_POINTS = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
Scalar = tuple  # (variable names, values at the points, decimals shown by a bare decimal literal or None, expr)


@functools.lru_cache(maxsize=8192)
def _sympify(s: str):
    """Plain math -> unevaluated sympy expression, or None. parse_expr runs eval(): only whitelisted characters and
    no dunder names get there, nor inputs that explode (power towers, factorials of huge or nested arguments)."""
    s = re.sub(r"(\d+(?:\.\d+)?)\s*%", r"(\1/100)", s.strip().translate(str.maketrans("{}[]", "()()")))
    s = re.sub(r"\(\s*([^()]+?)\s+choose\s+([^()]+?)\s*\)", r"binomial(\1, \2)", s)
    s = re.sub(r"\bsum_\(?(\w)\s*=\s*(\w+)\)?\s*\^\s*\(?(\w+)\)?\s*(.+)$", r"Sum(\4, (\1, \2, \3))", s)
    if (not re.fullmatch(r"[\w\s+\-*/^().,!%]+", s) or "__" in s or len(s) > 300 or re.search(
            r"\^\s*\(?\s*\d{6,}|\^\s*\(?[\d\s]+\)?\s*\^|\d{5,}\s*!|!\s*\)*\s*!|\d\s*\^\s*\(?\d+\)?\s*\)\s*!", s)):
        return None
    names = {}
    for w in set(re.findall(r"[A-Za-z][A-Za-z0-9_]*", s)) - set(FUNCS):
        if "_" in w or len(w) == 1 or re.fullmatch(r"[A-Za-z]\d", w):
            names[w] = sp.Symbol(w)
        elif len(w) <= 3 and w.isalpha() and w.lower() not in STOP | {"odd", "yes", "nor", "non", "sum", "mod"}:
            s = re.sub(rf"\b{w}\b", "*".join(w), s)  # implicit products of variables: xy, abc
            names.update({c: sp.Symbol(c) for c in w})
        else:
            return None  # a word: not an expression
    try:
        e = parse_expr(s, local_dict={**names, **FUNCS}, transformations=_T, evaluate=False)
    except Exception:  # SyntaxError, TypeError, TokenError, ...: not an expression
        return None
    return e if isinstance(e, sp.Expr) else None


def _num(e, point: dict):
    """e at point: exact Rational when it is one, else a 30-digit Float; None where undefined. Built unevaluated and
    estimated by mpmath first, so n!! at n = 12 costs a Stirling estimate; exact evaluation only below 1e50."""
    try:
        with sp.evaluate(False):
            v = e.xreplace(point)
        for sm in v.atoms(sp.Sum):  # finite sums exactly; infinite or huge ones not at all
            if not all(b.is_number and abs(b) < 10**4 for lim in sm.limits for b in lim[1:]):
                return None
            v = v.xreplace({sm: sm.doit()})
        f = sp.N(v, 30)
    except (ValueError, ArithmeticError, TypeError):  # e.g. mpmath's "gamma function pole" for (n - 4)! at n = 3
        return None
    if not f.is_number or f.has(sp.zoo, sp.nan, sp.oo, -sp.oo) or f.is_finite is False:
        return None
    return exact if abs(f) < 1e50 and (exact := v.doit()).is_Rational else f


def _fingerprint(e, places: int | None = None) -> Scalar:
    """Values at integer points, both parities per variable and distinct across variables; constant -> constant."""
    syms = sorted(e.free_symbols, key=str)
    vals = tuple(_num(e, {x: sp.Integer(_POINTS[(3 * t + 7 * j) % 10]) for j, x in enumerate(syms)})
                 for t in range(6 if syms else 1))
    if syms and vals[0] is not None and all(v is not None and _eq(v, vals[0]) for v in vals):
        return (), vals[:1], places, e
    return tuple(map(str, syms)), vals, places, e


@functools.lru_cache(maxsize=8192)
def _scalar(s: str) -> Scalar | None:
    dec = re.fullmatch(r"-?\d+\.(\d+)\s*(%?)", s.strip())  # "35.7%" vouches for 3 decimals of a probability
    return None if (e := _sympify(s)) is None else _fingerprint(e, len(dec[1]) + 2 * bool(dec[2]) if dec else None)


def _eq(a, b, tol: float = 0.0) -> bool:
    if isinstance(a, sp.Rational) and isinstance(b, sp.Rational):
        return a == b or bool(tol and abs(a - b) <= tol)
    return bool(abs(sp.N(a - b, 20)) <= max(tol, 1e-9 * max(1, abs(a), abs(b))))


def _scalar_eq(a: Scalar, b: Scalar) -> bool:
    tol = max(0.5 * 10.0 ** -p * (1 + 1e-9) if p is not None else 0.0 for p in (a[2], b[2]))
    pairs = [(x, y) for x, y in zip(a[1], b[1]) if x is not None and y is not None]  # domain edges: C(3, 4) vs (3-4)!
    if a[0] != b[0] or len(pairs) >= min(3, len(a[1])) or not a[0]:  # constants: equal values or nothing
        return a[0] == b[0] and bool(pairs) and all(_eq(x, y, tol) for x, y in pairs)
    return sp.simplify(a[3] - b[3]) == 0  # too few points evaluate: symbolic after all


def _split_top(s: str, seps: str = r",|\band\b|\bor\b") -> list[str]:
    parts, depth, last = [], 0, 0
    for m in re.finditer(r"[(\[{]|[)\]}]|" + seps, s):
        depth += (m[0] in "([{") - (m[0] in ")]}")
        if depth == 0 and m[0] not in ")]}":
            parts, last = parts + [s[last:m.start()]], m.end()
    return [p.strip() for p in parts + [s[last:]] if p.strip()]


def _tuple(s: str) -> list[str] | None:
    """'(2, 1)' -> ['2', '1']; None unless s is one bracketed group with a top-level comma."""
    depth = [0]
    for ch in s:
        depth.append(depth[-1] + (ch in "([{") - (ch in ")]}"))
    inner = _split_top(s[1:-1], ",") if s[:1] in ("(", "[", "{") and 0 not in depth[1:-1] and depth[-1] == 0 else []
    return inner if len(inner) > 1 else None


@functools.lru_cache(maxsize=8192)
def solutions(span: str) -> tuple | None:
    """'x=0, y=2 and x=9, y=11' -> 2 solutions of 2 scalars; '1, 4 and 9' -> 3 of 1; '(x, y) = (2, 1)' -> 1 of 2.
    A solution starts anew when a variable repeats or a bare value follows; '±' doubles an item. None if unreadable."""
    span = re.sub(r"\s*\(?\s*\bmod(?:ulo)?\s*[({]?\s*\w+\s*[)}]?\s*\)?\s*$", "", span.strip().rstrip("."))  # (mod 7)
    span = span[1:-1] if span.startswith("{") and _tuple(span) else span
    if len(_split_top(span, ",")) == 2 and re.search(r",\s+or\s", span):  # a restatement: "n!, or n!"
        span = _split_top(span, ",")[0]
    sols, cur, last_vars = [], {}, []
    parts = [q for p in _split_top(span) for q in (_split_top(p[1:-1]) if "=" in p and _tuple(p) else [p])]
    while parts:
        if (k := min((i for i in (parts[0].find("±"), parts[0].find("∓")) if i >= 0), default=-1)) >= 0:
            parts[:1] = [parts[0][:k] + "+" + parts[0][k + 1:], parts[0][:k] + "-" + parts[0][k + 1:]]
            continue
        part = parts.pop(0)
        *lhs, rhs = _split_top(part, r"(?<![<>!=≤≥])=(?!=)|∈") or [""]  # x ∈ [-1, 1] names a value too
        vals = _tuple(rhs) or [rhs]
        if re.search(r"[<>≤≥≠]", part):
            return None
        if lhs and all(re.fullmatch(r"[A-Za-z][\w']*(?:\([^()]*\))?", x) or _tuple(x) for x in lhs):  # x = y = 0
            names = [v for x in lhs for v in (_tuple(x) or [x])]
            if len(names) != len(vals) != 1:
                return None
            pairs = list(zip(names, vals)) if len(names) == len(vals) else [(n, vals[0]) for n in names]
        else:  # a bare value, or a computation "8! - 1260 = 120" whose last member counts
            lhs, names = [], last_vars if len(last_vars) == len(vals) else [f"#{i}" for i in range(len(vals))]
            pairs = list(zip(names, vals))
        if cur and (not lhs or any(n.replace(" ", "") in cur for n, _ in pairs)):
            sols, cur = sols + [cur], {}
        cur.update({n.replace(" ", ""): _scalar(v) for n, v in pairs})
        last_vars = [n for n, _ in pairs]
    if any(not s or None in s.values() for s in sols + [cur]):
        return None
    named = not any(n.startswith("#") for s in sols + [cur] for n in s)
    return tuple(tuple(v for _, v in (sorted(s.items()) if named else s.items())) for s in sols + [cur])


def solutions_eq(a: tuple, b: tuple) -> bool:
    """Same number of solutions and a one-to-one match, in any order (positional inside a solution)."""
    left = list(b)
    for sa in a if len(a) == len(b) <= 50 else [()]:
        if (hit := next((k for k, sb in enumerate(left) if sa and len(sa) == len(sb) and all(map(_scalar_eq, sa, sb))),
                        None)) is None:
            return False
        left.pop(hit)
    return True


def boxed_by_math_verify(text: str) -> tuple | None:
    """math-verify's LaTeX parser on the last \\boxed{} content, for LaTeX our rewrite could not read."""
    if not (boxed := list(re.finditer(r"\\boxed\s*\{", text))) or not (g := group(text, boxed[-1].end() - 1)):
        return None
    from math_verify import LatexExtractionConfig, parse
    found = parse(f"${g[0]}$", extraction_config=[LatexExtractionConfig()], parsing_timeout=None)  # _bounded guards
    e = next((r.rhs if isinstance(r, sp.Eq) else r for r in found if isinstance(r, sp.Basic)), None)
    return ((_fingerprint(e),),) if isinstance(e, sp.Expr) else None
