"""Final-answer extraction and equivalence for math answers (CHAMP golds, one-sentence summaries, solutions).

A span of text becomes a list of *solutions*, each a tuple of scalars; a scalar is a sympy
expression reduced to its values at fixed integer points (a "fingerprint"). Equivalence and the
grouping key for majority voting are the same computation, so they cannot disagree.

Why not math-verify alone: its plain-text extractor reads numbers and simple expressions only
(`C(10, 5)` -> 5, `n(n+1)/2` -> nothing, "There are 76 ... {1, ..., 6}" -> 6), and CHAMP answers
are mostly plain text. So plain text goes through sympy's parser plus CHAMP notation (C(n, k),
`!`, floor, sum_(i=1)^n, implicit products); LaTeX is rewritten to that plain form, and
math-verify's LaTeX parser (latex2sympy2) reads the final LaTeX span when our rewrite cannot.
Why fingerprints rather than simplify(a - b) == 0 first: simplify is slow, unbounded and weak with
floor/factorial/binomial; exact evaluation at 6 integer points decides CHAMP formulas in
milliseconds. simplify() remains the fallback when too few points evaluate.
"""
from __future__ import annotations

import functools
import logging
import re
import signal
import threading
import warnings

import sympy as sp
from sympy.parsing.sympy_parser import (convert_xor, implicit_multiplication_application, parse_expr,
                                        rationalize, standard_transformations)

VERSION = "1"
TIMEOUT_S = 2.0  # per equivalent()/answer_key() call, parsing and evaluation included

# math-verify warns once that we disabled its timeouts; we bound it ourselves (see _bounded).
warnings.filterwarnings("ignore", message=r"\s*Using non-Expr arguments")  # sympy, on odd but harmless inputs
for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(lambda r: "Timeout is disabled" not in r.getMessage())


class _Timeout(BaseException):
    """BaseException so sympy's broad `except Exception` blocks cannot swallow it."""


def _bounded(fn, *args):
    """fn(*args) under TIMEOUT_S. On the main thread SIGALRM interrupts the work (math-verify's own
    signal timeouts raise off the main thread, so we always call it with them disabled). Elsewhere a
    daemon thread runs it and we stop waiting; Python cannot kill that thread, so _too_big() keeps
    inputs known to explode (power towers, huge factorials) away from sympy."""
    if (threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
            and signal.getitimer(signal.ITIMER_REAL)[0] == 0):
        def on_alarm(*_):
            raise _Timeout()
        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, TIMEOUT_S)
        try:
            return fn(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old if old is not None else signal.SIG_DFL)
    out: list = []

    def run() -> None:
        try:
            out.append((True, fn(*args)))
        except BaseException as e:  # handed back to the caller below
            out.append((False, e))
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(TIMEOUT_S)
    if not out:
        raise _Timeout()
    if not out[0][0]:
        raise out[0][1]
    return out[0][1]


# ---------------------------------------------------------------- text normalisation
_WORDS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve".split())}
_UNICODE = {"−": "-", "–": "-", "—": "-", "×": "*", "·": "*", "⋅": "*", "∗": "*", "÷": "/", "²": "^2", "³": "^3",
            "π": "pi", "∞": "oo", "…": "...", "\u2009": " ", "\u00a0": " ", "’": "'", "⌊": "floor(", "⌋": ")"}
_TEX = {"cdot": "*", "times": "*", "div": "/", "pm": "±", "mp": "∓", "le": "≤", "leq": "≤", "ge": "≥", "geq": "≥",
        "neq": "≠", "ne": "≠", "lt": "<", "gt": ">", "infty": "oo", "lfloor": "floor(", "rfloor": ")", "lceil": "ceiling(",
        "rceil": ")", "ldots": "...", "cdots": "...", "dots": "...", "equiv": "≡", "bmod": " mod ", "pmod": " mod ",
        "mod": " mod ", "in": "∈", "approx": "≈", "mid": "|", "vert": "|", "lvert": "|", "rvert": "|", "%": "%"}
_DROP = re.compile(r"\\(?:left|right|[bB]ig+[lr]?|displaystyle|quad|qquad)\b|\\[,;:! ]|\$|\\[()\[\]]")


def _group(s: str, i: int) -> tuple[str, int] | None:
    """The brace group (or single character) starting at s[i] -> (content, index after it)."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        return None
    if s[i] != "{":
        return s[i], i + 1
    depth = 0
    for j in range(i, len(s)):
        depth += {"{": 1, "}": -1}.get(s[j], 0)
        if depth == 0:
            return s[i + 1:j], j + 1
    return None


def _delatex(s: str) -> str:
    """LaTeX -> the plain notation _sympify reads; plain text passes through unchanged."""
    s = s.replace("\\{", "⦃").replace("\\}", "⦄")  # literal set braces survive grouping-brace rewrites
    s = re.sub(r"\\(?:text|mathrm|mathbf|mathit|operatorname|textbf|mbox)\s*\{([^{}]*)\}", r" \1 ", s)
    s = re.sub(r"\\[dt]?binom", r"\\binom", re.sub(r"\\[dt]frac", r"\\frac", s))
    out, i = "", 0
    while i < len(s):
        m = re.match(r"\\(frac|binom|sqrt)|[\^_](?=\s*\{)", s[i:])
        if not m:
            out, i = out + s[i], i + 1
            continue
        i += m.end()
        if m[0] in "^_":
            g = _group(s, i)
            out, i = (out + m[0] + "(" + _delatex(g[0]) + ")", g[1]) if g else (out + m[0], i)
            continue
        root = None
        if m[1] == "sqrt" and s[i:i + 1] == "[":
            close = s.find("]", i)
            root, i = s[i + 1:close], close + 1
        args = []
        for _ in range(1 if m[1] == "sqrt" else 2):
            g = _group(s, i)
            if g is None:
                return out + s[i:]
            args.append(_delatex(g[0]))
            i = g[1]
        out += {"frac": lambda a: f"(({a[0]})/({a[1]}))", "binom": lambda a: f"C({a[0]}, {a[1]})",
                "sqrt": lambda a: f"({a[0]})^(1/({root}))" if root else f"sqrt({a[0]})"}[m[1]](args)
    out = _DROP.sub(" ", out)
    out = re.sub(r"\\([A-Za-z]+|%)", lambda m: _TEX.get(m[1], m[1]), out)
    return out.replace("⦃", "{").replace("⦄", "}")


def _plain(text: str) -> str:
    for a, b in _UNICODE.items():
        text = text.replace(a, b)
    text = re.sub(r"√\s*(\d+|[A-Za-z]|\([^()]*\))", r"sqrt(\1)", _delatex(text))
    text = re.sub(r"\b(\w)\s+factorial(?:\s*\(\s*\1\s*!\s*\))?", r"\1!", text)  # "n factorial (n!)" -> n!
    text = re.sub(r"\b(" + "|".join(_WORDS) + r")\b", lambda m: _WORDS[m[1].lower()], text, flags=re.I)
    return re.sub(r"(\d),(\d{3})(?![\d])", r"\1\2", re.sub(r"(\d),(\d{3}),(\d{3})(?![\d])", r"\1\2\3", text))


# ---------------------------------------------------------------- answer spans
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS = re.compile(r"\b(?:final answer|answer)\s*(?:is|:)\s*:?\s*", re.I)
_COPULA = re.compile(r"\b(?:is|are|was|were|be|becomes|equals|equal to|gives|yields|results in|totals)\b|≡|:\s", re.I)
_CLAUSE = re.compile(r",?\s+(?:which|where|when|whenever|because|since|if|for|with|as|achieved|attained|obtained|occurring|"
                     r"occurs|meaning|assuming|provided|while|but|due|modulo|mod|in terms)\b|,\s+(?:i\.e\.|so|this|it|that|the"
                     r"|given|and (?:this|it|the|is|so|that))\b|\(\s*mod\b|;", re.I)
_TOK = re.compile(r"\d+(?:\.\d+)?|[A-Za-z][A-Za-z0-9_']*|\.\.\.|\S")
_OPS = set("+-*/^()[]{}!=<>≤≥≠±∓|,.%≡'") | {"..."}
_FUNCS = {"C": sp.binomial, "binomial": sp.binomial, "binom": sp.binomial, "floor": sp.floor, "ceil": sp.ceiling,
          "ceiling": sp.ceiling, "sqrt": sp.sqrt, "cbrt": sp.cbrt, "log": sp.log, "ln": sp.log, "exp": sp.exp,
          "sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "abs": sp.Abs, "Sum": sp.Sum, "factorial": sp.factorial,
          "pi": sp.pi, "oo": sp.oo, "max": sp.Max, "min": sp.Min}
_MATH_WORDS = set(_FUNCS) | {"choose", "sum_", "mod"}
_STOP = set("a an the is are was be of to in on at by for and or as it its if so no not with that this than then there "
            "their which when where from all any each every only must can has have such we".split())
_NEG = re.compile(r"\b(?:no|not|none|cannot|never|impossible|neither|nor|nothing)\b|n't\b", re.I)


def _runs(text: str) -> list[str]:
    """Maximal spans of math tokens (numbers, operators, variables, known functions), in order."""
    toks = [(m[0], m.start(), m.end()) for m in _TOK.finditer(text)]
    runs, cur = [], []

    def mathy(k: int) -> bool:
        t = toks[k][0]
        near_op = any(0 <= j < len(toks) and toks[j][0] in _OPS - {",", "."} for j in (k - 1, k + 1))
        if t[0].isdigit() or t in _OPS or t in ("choose", "mod", "pi", "oo"):
            return True
        if t in _MATH_WORDS:  # a function name counts only when applied: "C(n, 4)", not "the binomial coefficient"
            return k + 1 < len(toks) and (toks[k + 1][0] == "(" or t == "sqrt" and toks[k + 1][0][0].isalnum())
        if re.fullmatch(r"[A-Za-z](?:_\w+|\d|')?|[A-Za-z]+_\w+", t):
            return t not in ("a", "A", "I") or near_op  # articles count only next to an operator
        return len(t) <= 3 and t.isalpha() and t.lower() not in _STOP and near_op  # products like xy, abc

    for k, (t, a, b) in enumerate(toks):
        join = t in ("and", "or") and cur and k + 1 < len(toks) and mathy(k + 1)
        if join or mathy(k):
            cur.append((t, a, b))
        elif cur:
            runs.append(cur)
            cur = []
    runs.append(cur)
    out = []
    for r in runs:
        while r and r[-1][0] in {",", ".", ":", "and", "or", "=", "..."}:
            r = r[:-1]
        words = [t for t, _, _ in r]
        if r and (any(c.isdigit() for c in "".join(words)) or any(w in _MATH_WORDS or len(w) == 1 and w.isalpha()
                                                                   for w in words)):
            out.append(text[r[0][1]:r[-1][2]].strip("([{ ") if words[0] in "([{" and not _balanced(
                text[r[0][1]:r[-1][2]]) else text[r[0][1]:r[-1][2]])
    return out


def _balanced(s: str) -> bool:
    return all(s.count(a) == s.count(b) for a, b in ("()", "[]", "{}"))


def _sentences(text: str) -> list[str]:
    text = re.split(r",?\s+(?:because|since|due to)\b|;\s", text, flags=re.I)[0] if len(text) < 600 else text
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z(\\$])|\n+", text.strip()) if s.strip()]


def _span_from_sentence(sent: str) -> str | None:
    m = re.match(r"\s*(.+?)\s+(?:is|are) the only\b", sent)
    if m and _runs(m[1]) and _runs(m[1])[0] == m[1].strip():
        return m[1].strip()
    cops = list(_COPULA.finditer(sent))
    for c in reversed(cops):
        tail = _CLAUSE.split(sent[c.end():])[0]
        if re.match(r"\s*(?:no|none)\b", tail, re.I):
            return "none"
        runs = _runs(tail)
        if runs:
            return runs[0]
    return None


def extract_answer(text: str) -> str | None:
    """The final answer span of a solution or one-sentence summary (plain notation), or None.

    Order: last \\boxed{...}; a leading Yes/No; "the answer is X"; then per sentence the first math
    span after the last copula ("... is X", "... are X and Y", "≡ X (mod m)"), skipping subordinate
    clauses (", which ...", " when ...") and retrying earlier copulas; then a leading quantity
    ("At most 2 of ..."); last, the final math span of the sentence outside {...} sets."""
    return _extract(text)[0] if isinstance(text, str) and text.strip() else None


def _extract(text: str) -> tuple[str | None, bool]:
    """(span, primary); primary is False for the last-math-span fallback, a guess rather than a statement."""
    boxed = list(_BOXED.finditer(text))
    if boxed and (g := _group(text, boxed[-1].end() - 1)):
        return _plain(g[0]).strip() or None, True
    text = _plain(text[-4000:])
    m = re.match(r"[\s*#>(]*(yes|no|true|false)\b(?!\s+(?:[a-z-]+\s+)?(?:solutions?|such|values?|integers?|real))",
                 text, re.I)
    if m:
        return m[1].capitalize(), True
    answers = list(_ANSWER_IS.finditer(text))
    if answers:
        tail = _CLAUSE.split(text[answers[-1].end():])[0]
        if m := re.match(r"\s*(yes|no|true|false)\b", tail, re.I):
            return m[1].capitalize(), True
        if runs := _runs(tail):
            return runs[0], True
    sents = _sentences(text)
    for sent in (reversed(sents) if len(text) >= 600 else sents):
        if span := _span_from_sentence(sent):
            return span, True
    if not sents:
        return None, False
    last = sents[-1] if len(text) >= 600 else sents[0]
    if m := re.match(r"\s*(?:(?:at most|at least|exactly|only|a total of|a minimum of|a maximum of)\s+)?(\d+)\s+(?=[a-z])", last, re.I):
        return m[1], True
    # Fallback: the final math span outside {...} sets, never the "6" of "on the set {1, ..., 6}".
    runs = _runs(re.sub(r"\{[^{}]*\}", " ", last))
    return (runs[-1], False) if runs else (None, False)


# ---------------------------------------------------------------- values
_T = standard_transformations + (convert_xor, implicit_multiplication_application, rationalize)
_SAFE = re.compile(r"[\w\s+\-*/^().,!%]*")
_POINTS = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
Scalar = tuple  # (symbol names, values at the points, decimal places of a bare decimal literal or None, expr)


def _too_big(s: str) -> bool:
    """Inputs whose evaluation can run away (and not be stoppable off the main thread)."""
    return len(s) > 300 or bool(re.search(r"\^\s*\(?\s*\d{6,}|\^\s*\(?[\d\s]+\)?\s*\^|\d{5,}\s*!|!\s*\)*\s*!"
                                          r"|\d\s*\^\s*\(?\d+\)?\s*\)\s*!|factorial\s*\(\s*factorial", s))


@functools.lru_cache(maxsize=8192)
def _sympify(s: str):
    """Plain math -> sympy expression, or None. Relations, text and unsafe strings are refused
    (parse_expr evaluates Python, so only a whitelist of characters and no dunder names get there)."""
    s = s.strip().replace("{", "(").replace("}", ")").replace("[", "(").replace("]", ")")
    s = re.sub(r"(\d+(?:\.\d+)?)\s*%", r"(\1/100)", s)
    s = re.sub(r"\(\s*([^()]+?)\s+choose\s+([^()]+?)\s*\)", r"binomial(\1, \2)", s)
    s = re.sub(r"\bsum_\(?(\w)\s*=\s*(\w+)\)?\s*\^\s*\(?(\w+)\)?\s*(.+)$", r"Sum(\4, (\1, \2, \3))", s)
    if not s or not _SAFE.fullmatch(s) or "__" in s or _too_big(s):
        return None
    names = {}
    for w in set(re.findall(r"[A-Za-z][A-Za-z0-9_]*", s)):
        if w in _FUNCS or w == "Sum":
            continue
        if "_" in w or len(w) == 1 or re.fullmatch(r"[A-Za-z]\d", w):
            names[w] = sp.Symbol(w)
        elif len(w) <= 3 and w.isalpha() and w.lower() not in _STOP | {"odd", "yes", "nor", "non", "sum", "mod"}:
            s = re.sub(rf"\b{w}\b", "*".join(w), s)  # implicit products of variables: xy, abc
            names.update({c: sp.Symbol(c) for c in w})
        else:
            return None  # an English word: not an expression
    try:
        e = parse_expr(s, local_dict={**names, **_FUNCS}, transformations=_T, evaluate=False)
    except Exception:  # sympy raises many kinds (SyntaxError, TypeError, TokenError, ...) on bad input
        return None
    return e if isinstance(e, sp.Expr) else None


def _num(e, point: dict):
    """e at the point: an exact Rational when it is one, else a 30-digit Float; None when undefined.
    Built unevaluated and estimated with mpmath first, so n!! at n = 12 costs a Stirling estimate,
    not an exact 479001600!; exact evaluation only for magnitudes below 1e50."""
    try:
        with sp.evaluate(False):
            v = e.xreplace(point)
        for sm in v.atoms(sp.Sum):  # finite sums exactly, term by term; infinite or huge ones are not evaluated
            if not all(b.is_number and abs(b) < 10**4 for lim in sm.limits for b in lim[1:]):
                return None
            v = v.xreplace({sm: sm.doit()})
        f = sp.N(v, 30)
    except (ValueError, ArithmeticError, TypeError):  # e.g. mpmath's "gamma function pole" for (n - 4)! at n = 3
        return None
    if not f.is_number or f.has(sp.zoo, sp.nan, sp.oo, -sp.oo) or f.is_finite is False:
        return None
    if abs(f) < 1e50 and (exact := v.doit()).is_Rational:
        return exact
    return f


@functools.lru_cache(maxsize=8192)
def _scalar(s: str) -> Scalar | None:
    e = _sympify(s)
    if e is None:
        return None
    dec = re.fullmatch(r"-?\d+\.(\d+)\s*(%?)", s.strip())
    return _fingerprint(e, len(dec[1]) + (2 if dec[2] else 0) if dec else None)


def _fingerprint(e, places: int | None) -> Scalar:
    """Values at integer points with both parities per variable, distinct across variables; an
    expression constant at every point (n - n) is that constant."""
    syms = sorted(e.free_symbols, key=str)
    points = [{x: sp.Integer(_POINTS[(3 * t + 7 * j) % 10]) for j, x in enumerate(syms)} for t in range(6 if syms else 1)]
    vals = tuple(_num(e, p) for p in points)
    if syms and vals[0] is not None and all(v is not None and _num_eq(v, vals[0], 0) for v in vals):
        return (), vals[:1], places, e
    return tuple(str(x) for x in syms), vals, places, e


def _num_eq(a, b, tol: float) -> bool:
    if isinstance(a, sp.Rational) and isinstance(b, sp.Rational):
        return a == b or bool(tol > 0 and abs(a - b) <= tol)
    return bool(abs(sp.N(a - b, 20)) <= max(tol, 1e-9 * max(1, abs(a), abs(b))))


def _scalar_eq(a: Scalar, b: Scalar) -> bool:
    if a[0] != b[0]:
        return False
    tol = max(0.5 * 10.0 ** -p * (1 + 1e-9) if p is not None else 0.0 for p in (a[2], b[2]))
    pairs = [(x, y) for x, y in zip(a[1], b[1]) if x is not None and y is not None]  # skip domain edges: C(3, 4) = 0, (3-4)! undefined
    if len(pairs) >= min(3, len(a[1])):
        return all(_num_eq(x, y, tol) for x, y in pairs)
    return sp.simplify(a[3] - b[3]) == 0  # too few points evaluate: fall back to symbolic simplification


def _split_top(s: str, seps: str = r",|\band\b|\bor\b") -> list[str]:
    parts, depth, last = [], 0, 0
    for m in re.finditer(r"[(\[{]|[)\]}]|" + seps, s):
        if m[0] in "([{":
            depth += 1
        elif m[0] in ")]}":
            depth -= 1
        elif depth == 0:
            parts.append(s[last:m.start()])
            last = m.end()
    return [p.strip() for p in parts + [s[last:]] if p.strip()]


def _expand_pm(s: str) -> list[str]:
    if "±" not in s and "∓" not in s:
        return [s]
    i = min(j for j in (s.find("±"), s.find("∓")) if j >= 0)
    return _expand_pm(s[:i] + "+" + s[i + 1:]) + _expand_pm(s[:i] + "-" + s[i + 1:])


def _wrapped(s: str) -> bool:
    """s is one bracketed group: '(1, 2)' yes, '(x, y) = (2, 1)' no."""
    depth = 0
    for k, ch in enumerate(s):
        depth += (ch in "([{") - (ch in ")]}")
        if depth == 0 and k < len(s) - 1:
            return False
    return len(s) > 1 and s[0] in "([{" and depth == 0


def _tuple_parts(s: str) -> list[str] | None:
    if _wrapped(s):
        inner = _split_top(s[1:-1], ",")
        return inner if len(inner) > 1 else None
    return None


_VAR = re.compile(r"[A-Za-z][\w']*(?:\([^()]*\))?")


@functools.lru_cache(maxsize=8192)
def _solutions(span: str) -> tuple | None:
    """'x=0, y=2 and x=9, y=11' -> ((0, 2), (9, 11)); '1, 4 and 9' -> ((1,), (4,), (9,)); 'C(n, 4)' -> ((C(n,4)),).
    Each item is a Scalar; a solution starts anew when a variable repeats. None when anything is unreadable."""
    span = span.strip().rstrip(".")
    if span.startswith("{") and _wrapped(span):
        span = span[1:-1]
    sols: list[dict] = []
    cur: dict = {}
    last_vars: list[str] = []
    parts = [q for p in _split_top(span) for q in (_split_top(p[1:-1]) if _tuple_parts(p) and "=" in p else [p])]
    for part in (q for p in parts for q in _expand_pm(p)):
        sides = [x.strip() for x in re.split(r"(?<![<>!=≤≥])=(?!=)", part)]
        lhs = sides[:-1]
        if any(re.search(r"[<>≤≥≠]", x) for x in sides):
            return None
        if lhs and all(_VAR.fullmatch(x) or _tuple_parts(x) for x in lhs):  # assignments x = y = 0, (x, y) = (2, 1)
            names = [v for x in lhs for v in (_tuple_parts(x) or [x])]
            vals = _tuple_parts(sides[-1]) or [sides[-1]]
            if len(lhs) == 1 and _tuple_parts(lhs[0]):
                pairs = list(zip(names, vals)) if len(names) == len(vals) else None
            else:
                pairs = [(n, vals[0]) for n in names] if len(vals) == 1 else None
            if pairs is None:
                return None
        else:
            vals = _tuple_parts(sides[-1]) or [sides[-1]]
            names = last_vars if len(last_vars) == len(vals) else [f"#{i}" for i in range(len(vals))]
            pairs = list(zip(names, vals))
        if any(n in cur for n, _ in pairs) or (not lhs and cur):
            sols.append(cur)
            cur = {}
        for n, v in pairs:
            cur[n.replace(" ", "")] = _scalar(v)
        last_vars = [n for n, _ in pairs]
    sols.append(cur)
    if not sols or any(not s or any(v is None for v in s.values()) for s in sols):
        return None
    named = all(not n.startswith("#") for s in sols for n in s)
    return tuple(tuple(v for _, v in (sorted(s.items()) if named else s.items())) for s in sols)


def _solutions_eq(a: tuple, b: tuple) -> bool:
    """Same number of solutions and a one-to-one match (order-free; positional inside a solution)."""
    if len(a) != len(b) or len(a) > 50:
        return False
    left = list(b)
    for sa in a:
        hit = next((k for k, sb in enumerate(left) if len(sa) == len(sb) and all(map(_scalar_eq, sa, sb))), None)
        if hit is None:
            return False
        left.pop(hit)
    return True


def _mv_solutions(text: str) -> tuple | None:
    """math-verify's LaTeX parser on the last LaTeX span, for LaTeX our rewrite could not read."""
    spans = re.findall(r"\$([^$]+)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", text, re.S)
    if not spans:
        return None
    from math_verify import LatexExtractionConfig, parse
    found = parse(f"${next(x for x in spans[-1] if x)}$", extraction_config=[LatexExtractionConfig()],
                  parsing_timeout=None)  # None: no signal timer, _bounded guards the call instead
    e = next((r for r in found if isinstance(r, sp.Basic)), None)
    e = e.rhs if isinstance(e, sp.Eq) else e
    return ((_fingerprint(e, None),),) if isinstance(e, sp.Expr) else None


# ---------------------------------------------------------------- verdicts
_NONE_GOLD = re.compile(r"\b(?:no|none|not possible|impossible|does not exist|do not exist|doesn't exist)\b|^none$", re.I)
_ALT_SPLIT = re.compile(r",?\s*\bor\s+(?:equivalently|approximately|an equivalent form(?: such as)?)\s*,?\s*", re.I)
_LETTER = re.compile(r"[\s*]*\(?([A-Z])\)?(?:[.):]|\s*$)")


def _alts(gold: str) -> list[tuple[str, bool]]:
    """(alternative, text_only): parentheticals like '(i.e., all values)' are compared as text only."""
    out = []
    for part in _ALT_SPLIT.split(gold.strip()):
        m = re.fullmatch(r"(.*?)\s+\(((?:i\.e\.,?\s*)?[A-Za-z]{2,}\s.*)\)", part)
        main = m[1] if m else part
        out.append((main, False))
        if m:
            out.append((re.sub(r"^i\.e\.,?\s*", "", m[2]), True))
        if re.fullmatch(r"0\s+[a-z][\w-]*", main.strip()):  # '0 pairs', '0 roots': "there are no pairs" agrees
            out.append(("none", True))
    return out


def gold_alternatives(gold: str) -> list[str]:
    """'C(10, 5), or equivalently 252' -> ['C(10, 5)', '252']; '100 (i.e., all values)' -> ['100', 'i.e., all values']."""
    return [a for a, _ in _alts(gold) if a != "none"]


@functools.lru_cache(maxsize=4096)
def _gold_solutions(g: str) -> tuple | None:
    """A gold's value: the whole string, or less one trailing noun ('98 values'), or the span of a sentence
    ('0 is the only possible value', 'The limit exists and is equal to 3')."""
    g = _plain(g).strip().rstrip(".")
    for c in (g, re.sub(r"\s+[a-z][a-z-]*$", "", g), _span_from_sentence(g) if " " in g else None):
        if c and c != "none" and (sol := _solutions(c)) is not None:
            return sol
    return None


def _words(s: str) -> set[str]:
    s = re.sub(r"\s*([<>=≤≥≠+*/^])\s*", r"\1", _plain(s).lower())
    toks = (t.strip(".,;:!?\"'") for t in s.split())
    toks = (t[1:] if t.startswith("(") and not _balanced(t) else t for t in toks)
    toks = (t[:-1] if t.endswith(")") and not _balanced(t) else t for t in toks)
    return {t[:-1] if len(t) > 3 and t.endswith("s") else t for t in toks if t and t not in _STOP - {"all", "only"}}


def _text_match(cand: str, gold: str) -> bool:
    """Every content word of a text gold appears in the candidate, with the same negation polarity."""
    g, c = _words(gold), _words(cand)
    if len(g) < 2:
        return bool(g) and g == c
    return g <= c and bool(_NEG.search(gold)) == bool(_NEG.search(_sentences(_plain(cand))[0]))


def _polarity(text: str) -> bool | None:
    """Yes/No of an answer: an explicit yes/no/true/false, else whether its first sentence is negated."""
    span = extract_answer(text)
    if span in ("Yes", "True", "No", "False"):
        return span in ("Yes", "True")
    sents = _sentences(_plain(text))
    return not _NEG.search(sents[0 if len(text) < 600 else -1]) if sents else None


def _choice(text: str, choices: list[str]) -> str | None:
    m = _LETTER.match(text) or re.search(r"\b(?:answer|option|choice)\s*(?:is\s*)?:?\s*\(?([A-Z])\)?(?!\w)", text, re.I)
    if m and ord(m[1].upper()) - 65 < len(choices):
        return choices[ord(m[1].upper()) - 65]
    norm = [" ".join(re.sub(r"[^\w\s.]", " ", x.lower()).split()) for x in [text, *choices]]
    exact = [c for c, n in zip(choices, norm[1:]) if n == norm[0]]
    hits = exact or [c for c, n in zip(choices, norm[1:]) if n and re.search(rf"\b{re.escape(n)}\b", norm[0])]
    return hits[0] if len(hits) == 1 else None


def _equivalent(cand: str, gold: str, choices: list[str] | None) -> bool:
    if choices:
        gold = (_choice(gold, choices) or gold) if _LETTER.fullmatch(gold.strip()) else gold
        picked = _choice(cand, choices)
        if picked is not None:
            return picked.strip().lower() == gold.strip().lower() or _equivalent(picked, gold, None)
    if gm := re.match(r"\s*(yes|no|true|false)\b(?!\s+[a-z])", gold, re.I):  # not 'No integer solutions'
        return _polarity(cand) is (gm[1].lower() in ("yes", "true"))
    span, primary = _extract(cand)
    csol = _solutions(span) if span and span != "none" else None
    if csol is None and span != "none" and ("\\" in cand or "$" in cand):
        csol = _mv_solutions(cand)
    for alt, text_only in _alts(gold):
        gsol = None if text_only else _gold_solutions(alt)
        if gsol is not None:
            if csol is not None and _solutions_eq(gsol, csol):
                return True
        elif _NONE_GOLD.search(alt):
            if span == "none" or ((csol is None or not primary) and _NEG.search(_sentences(_plain(cand))[0])
                                  and not re.match(r"[\s*]*yes\b", cand, re.I)):
                return True
        elif _text_match(cand, alt):
            return True
    return False


def equivalent(candidate: str | None, gold: str, choices: list[str] | None = None) -> bool:
    """Does the candidate (an answer, a one-sentence summary or a whole solution) state the gold answer?
    Never raises: unparseable input, timeouts (TIMEOUT_S) and internal errors all give False."""
    if not isinstance(candidate, str) or not isinstance(gold, str) or not candidate.strip() or not gold.strip():
        return False
    try:
        return bool(_bounded(_equivalent, candidate, gold, choices))
    except (Exception, _Timeout):
        return False


def _scalar_key(x: Scalar) -> str:
    body = ",".join("?" if v is None else str(v) if isinstance(v, sp.Rational) else str(sp.N(v, 9)) for v in x[1])
    return f"f({','.join(x[0])})=[{body}]" if x[0] else body


def _key(text: str) -> str | None:
    span = extract_answer(text)
    if span is None or span == "none":
        return span
    if span in ("Yes", "True", "No", "False"):
        return "yes" if span in ("Yes", "True") else "no"
    sol = _solutions(span)
    if sol is None:
        return " ".join(span.lower().split())
    return " | ".join(sorted(" ; ".join(map(_scalar_key, s)) for s in sol))


def answer_key(text: str | None) -> str | None:
    """Canonical form for majority voting: '252' for 'C(10,5)' and 'There are 252 ways.'; for formulas in
    variables their values at the fixed points ('f(n)=[...]': simplify() has no canonical form, values do);
    'yes'/'no'/'none'; normalised text otherwise. None when there is no answer."""
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        return _bounded(_key, text)
    except (Exception, _Timeout):
        return None
