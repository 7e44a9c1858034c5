"""Final-answer extraction and equivalence for math: CHAMP golds, one-sentence summaries, whole solutions.

A span becomes solutions (tuples) of scalars (curation/math_values.py); a scalar is a sympy expression reduced
to its values at fixed integer points, so equivalence and the majority-vote key are one computation. Why there
is code here at all:
- math-verify's plain-text extractor reads numbers and simple expressions only (`C(10, 5)` -> 5, `n(n+1)/2`
  -> nothing, "There are 76 ... on {1, ..., 6}" -> 6), and CHAMP answers are plain sentences. So sentences
  are cut to their answer span here, LaTeX is rewritten to plain notation, and sympy's parser reads it with
  CHAMP notation added (C(n, k), `!`, floor, sum_(i=1)^n, implicit products). math-verify's LaTeX parser
  reads \\boxed{} content our rewrite cannot.
- simplify(a - b) == 0 is slow, unbounded and weak on floor/factorial/binomial; exact values at 6 integer
  points decide CHAMP formulas in milliseconds; simplify() only when too few points evaluate.
- Neither library knows yes/no, "there are no solutions", lists of solutions or hedged non-answers.
"""
from __future__ import annotations

import functools
import logging
import re
import signal
import threading
import warnings

import sympy as sp

from curation.math_values import (FUNCS, STOP, boxed_by_math_verify, group, plain, solutions,
                                   solutions_eq)

VERSION = "1"
TIMEOUT_S = 2.0  # per equivalent() / answer_key() call

warnings.filterwarnings("ignore", message=r"\s*Using non-Expr arguments")  # sympy, on odd but harmless input
for _name in ("math_verify.parser", "math_verify.grader"):  # its timeouts are off on purpose, see _bounded
    logging.getLogger(_name).addFilter(lambda r: "Timeout is disabled" not in r.getMessage())


class _Timeout(BaseException):
    """A BaseException, so sympy's broad `except Exception` blocks cannot swallow it."""


def _on_alarm(*_) -> None:
    raise _Timeout()


def _bounded(fn, *args):
    """fn(*args) within TIMEOUT_S. Main thread: SIGALRM interrupts the work. Elsewhere signals are unusable (why
    math-verify's signal timeouts raise in worker threads and we pass parsing_timeout=None), so fn runs in a daemon
    thread that we stop waiting for; Python cannot kill it, hence _sympify's size guards and _num's mpmath estimates."""
    if (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
            and signal.getitimer(signal.ITIMER_REAL)[0] == 0):  # no timer of the caller's running
        old = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, TIMEOUT_S)
        try:
            return fn(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old if old is not None else signal.SIG_DFL)
    out: list = [None, _Timeout()]  # [result, error]

    def run() -> None:
        try:
            out[:] = [fn(*args), None]
        except BaseException as e:  # handed to the caller below
            out[1] = e
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(TIMEOUT_S)
    if out[1] is not None:
        raise out[1]
    return out[0]


# ------------------------------------------------------------------ answer spans
_COPULA = re.compile(r"\b(?:is|are|was|were|be|equals|gives|yields|results in|totals)\b|≡|:\s", re.I)
_CLAUSE = re.compile(r",?\s+(?:which|where|when|whenever|because|since|if|for|with|as|achieved|attained|obtained|"
                     r"occurring|occurs|meaning|assuming|provided|while|but|due|in terms)\b|,\s+(?:i\.e\.|so|this|it|"
                     r"that|the|given|and (?:this|it|the|is|so|that))\b|\(\s*mod\b|;", re.I)
# A copula inside these clauses describes rather than answers ("are 0, meaning n must be a multiple of k"); a bare
# if/when clause counts only after a copula: "is 0 when x = y is ...", not "the values of n when Q(n) = 5 are 0".
_SUBCLAUSE = re.compile(r",\s*(?:which|where|meaning|since|because|as|while|whereas|given|i\.e\.|and (?:this|it))\b"
                        r"|\b(?:if|when|whenever|unless)\b", re.I)
_TOK = re.compile(r"\d+(?:st|nd|rd|th)\b|\d+(?:\.\d+)?|[A-Za-z][A-Za-z0-9_']*|\.\.\.|\S")
_OPS = set("+-*/^()[]{}!=<>≤≥≠±∓|,.%≡'∈") | {"..."}
_NEG = re.compile(r"\b(?:no|not|none|cannot|never|impossible|neither|nor|nothing)\b|n't\b", re.I)


def _runs(text: str) -> list[str]:
    """Maximal spans of math tokens (numbers, operators, variables, applied functions), in order."""
    toks = [(m[0], m.start(), m.end()) for m in _TOK.finditer(text)]

    def mathy(k: int) -> bool:
        t, nxt = toks[k][0], toks[k + 1][0] if k + 1 < len(toks) else ""
        near_op = any(0 <= j < len(toks) and toks[j][0] in _OPS - {",", "."} for j in (k - 1, k + 1))
        if t[0].isdigit() or t in _OPS or t in ("choose", "mod", "pi", "oo"):
            return not (t[0].isdigit() and t[-1].isalpha())  # not an ordinal: "the 100th term"
        if t in FUNCS or t == "sum_":  # applied only: "C(n, 4)", not "the binomial coefficient"
            return nxt == "(" or (t == "sqrt" and nxt[:1].isalnum())
        if re.fullmatch(r"[A-Za-z](?:_\w+|\d|')?|[A-Za-z]+_\w+", t):
            return t not in ("a", "A", "I") or near_op  # articles count only next to an operator
        return len(t) <= 3 and t.isalpha() and t.lower() not in STOP and near_op  # products like xy, abc

    runs, cur = [], []
    for k, tok in enumerate(toks + [("", 0, 0)]):
        if k < len(toks) and (mathy(k) or tok[0] in ("and", "or") and cur and k + 1 < len(toks) and mathy(k + 1)):
            cur.append(tok)
            continue
        while cur and cur[-1][0] in {",", ".", ":", "and", "or", "=", "..."}:
            cur.pop()
        while cur and cur[0][0] in {",", ".", ":", "and", "or", "=", "...", ")", "]", "}"}:
            cur.pop(0)
        words = [t for t, _, _ in cur]
        unknown_call = cur and words[0] == "(" and text[cur[0][1] - 1:cur[0][1]].isalpha()  # the (n) of zeta(n)
        if cur and not unknown_call and (any(c.isdigit() for c in "".join(words))
                                         or any(w in FUNCS or len(w) == 1 and w.isalpha() for w in words)):
            runs.append(text[cur[0][1]:cur[-1][2]])
        cur = []
    return runs


def _sentences(text: str) -> list[str]:
    text = re.split(r",?\s+(?:because|since|due to)\b|;\s", text, flags=re.I)[0] if len(text) < 600 else text
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z(\\$])|\n+", text.strip()) if s.strip()]


def _span_from_sentence(sent: str) -> str | None:
    if (m := re.match(r"\s*(.+?)\s+(?:is|are) the only\b", sent)) and _runs(m[1])[:1] == [m[1].strip()]:
        return m[1].strip()  # "0 is the only possible value"
    cops = list(_COPULA.finditer(sent))
    if cops and re.match(r"\s*there\s+(?:is|are)\b", sent, re.I):  # "There are 76 involutions on ...": describes
        cops = cops[:1]
    found, main = [], False  # (weak, in a subclause, span); best: strong, outside subclauses, from the last copula
    for c in reversed(cops):
        marks = [m for m in _SUBCLAUSE.finditer(sent[:c.start()]) if m[0][0] == "," or _COPULA.search(sent[:m.start()])]
        between = sent[marks[-1].end():c.start()] if marks else ","
        while re.search(r"\([^()]*\)", between):
            between = re.sub(r"\([^()]*\)", "", between)
        main = main or "," in between  # no top-level comma since a clause mark: the copula is inside that clause
        tail = _CLAUSE.split(sent[c.end():])[0]
        if runs := ["none"] if re.match(r"\s*(?:no|none)\b", tail, re.I) else _runs(tail):
            weak = len(runs[0]) == 1 and runs[0].isalpha() and tail.strip() != runs[0]  # "the first n numbers"
            found += [] if weak and "," not in between else [(weak, "," not in between, runs[0])]
    # Subclause spans ("..., which is (n(n+1)/2)^2") only back up a main copula ("X, which is e^x, has no zeros": none).
    return min(found, key=lambda f: f[:2])[2] if found and main else None


def extract_answer(text: str) -> str | None:
    """The final answer of a solution or one-sentence summary, in plain notation ('none' for "there are no ..."):
    the last \\boxed{}; a leading Yes/No; "the answer is X"; the first math span after the last copula outside
    subordinate clauses ("... is X, which ...", "are X and Y", "≡ X (mod m)"); a leading quantity ("At most 2 of");
    last, the final math span outside {...} sets unless it is the subject ("x^4 + 1 is irreducible")."""
    return _extract(text)[0] if isinstance(text, str) and text.strip() else None


def _extract(text: str) -> tuple[str | None, bool]:
    """(span, primary); primary is False for the last-math-span fallback, a guess rather than a statement."""
    if (boxed := list(re.finditer(r"\\(?:boxed|fbox)\s*\{", text))) and (g := group(text, boxed[-1].end() - 1)):
        return plain(g[0]).strip() or None, True
    text = plain(text[-4000:])
    if m := re.match(r"[\s*#>(]*(yes|no|true|false)\b(?!\s+(?:[a-z-]+\s+)?(?:solutions?|such|values?|integers?|real))",
                     text, re.I):
        return m[1].capitalize(), True
    if answers := list(re.finditer(r"\b(?:final answer|answer)\s*(?:is|:)\s*:?\s*", text, re.I)):
        tail = _CLAUSE.split(text[answers[-1].end():])[0]
        if m := re.match(r"\s*(yes|no|true|false)\b", tail, re.I):
            return m[1].capitalize(), True
        if span := _span_from_sentence(tail) or (_runs(tail) or [None])[0]:  # "answer is p mod 7 is 3"
            return span, True
    sents = _sentences(text)
    for sent in reversed(sents) if len(text) >= 600 else sents:
        if span := _span_from_sentence(sent):
            return span, True
    last = re.sub(r"\{[^{}]*\}", " ", (sents[-1] if len(text) >= 600 else sents[0]) if sents else "")
    if m := re.match(r"\s*(?:(?:at most|at least|exactly|only|a total of|a m(?:ax|in)imum of)\s+)?(\d+)\s+(?=[a-z])",
                     last, re.I):
        return m[1], True
    if (m := re.search(r"\b(?:occurs?|appears?)\s+(?:exactly\s+)?((?:(?!\b(?:in|of|the)\b).)+?)\s+times\b", last)) \
            and _runs(m[1]):
        return _runs(m[1])[0], True  # "k appears (n-k)2^(n-k-1) times among ..."
    runs = _runs(last)  # the fallback: never the "6" of "on the set {1, ..., 6}", a lone letter, nor a subject
    verb_after = runs and re.match(r"\s*(?:is|are|was|has|have|can|cannot|does|do|will|must|should)\b",
                                   last[last.rindex(runs[-1]) + len(runs[-1]):], re.I)
    if not runs or verb_after or re.fullmatch(r"[A-Za-z]", runs[-1]):
        return None, False
    return runs[-1], False


# ------------------------------------------------------------------ verdicts
_NONE_GOLD = re.compile(r"\b(?:no|none|not possible|impossible|does not exist|do not exist|doesn't exist)\b", re.I)
_LETTER = re.compile(r"[\s*]*\(?([A-Z])\)?(?:[.):]|\s*$)")
_HEDGE = re.compile(r"\b(?:not possible to (?:determine|find|say|compute)|cannot be (?:determined|solved|found|"
                    r"computed)|without (?:further|additional|more|a detailed|computational)|requires? (?:numerical|"
                    r"computational|further)|unable to|does not have a straightforward)\b", re.I)


def _alts(gold: str) -> list[tuple[str, bool]]:
    """(alternative, text_only): a parenthetical as in '100 (i.e., all values)' is compared as text only."""
    out, gold = [], gold.strip()
    for part in re.split(r",?\s*\bor\s+(?:equivalently|approximately|an equivalent form(?: such as)?),?\s*", gold):
        m = re.fullmatch(r"(.*?)\s+\((?:i\.e\.,?\s*)?([A-Za-z]{2,}\s.*)\)", part)
        out += [(m[1], False), (m[2], True)] if m else [(part, False)]
        if re.fullmatch(r"(?:at most )?0(?:\s+(?!is\b)[a-z][\w-]*){1,2}", (m[1] if m else part).strip(), re.I):
            out.append(("none", True))  # '0 pairs', 'At most 0 integer-valued zeros': "there are no pairs" agrees
    return out


def gold_alternatives(gold: str) -> list[str]:
    """'C(10, 5), or equivalently 252' -> ['C(10, 5)', '252']; '100 (i.e., all values)' -> ['100', 'all values']."""
    return [a for a, _ in _alts(gold) if a != "none"]


@functools.lru_cache(maxsize=4096)
def _gold_solutions(g: str) -> tuple | None:
    """A gold's value: itself, less a trailing noun ('98 values'), or its sentence's span ('0 is the only value')."""
    g = plain(g).strip().rstrip(".")
    return next((sol for c in (g, re.sub(r"\s+[a-z][a-z-]*$", "", g), _span_from_sentence(g) if " " in g else None)
                 if c and c != "none" and (sol := solutions(c)) is not None), None)


def _negated(text: str) -> bool | None:
    """Is the answer's statement (its first sentence; a long solution's last) negated, "There do not exist ..."?
    None when it hedges before any conclusion ("without further analysis, it is not possible to determine");
    a hedge after one (", so a_1 cannot be determined") is dropped before looking for a negation."""
    text = (_sentences(plain(text)) or [""])[0 if len(text) < 600 else -1]
    if _HEDGE.search(re.split(r",?\s+(?:so|therefore|thus|hence)\b", text, maxsplit=1, flags=re.I)[0]):
        return None
    return bool(_NEG.search(re.sub(_HEDGE.pattern + r"[^,.;]*", "", text, flags=re.I)))


def _equivalent(cand: str, gold: str, choices: list[str] | None) -> bool:
    if choices:  # a letter or a choice's text names a choice
        pick = lambda t: (choices[ord(m[1]) - 65] if (m := _LETTER.match(t) or re.search(  # noqa: E731
            r"\b(?:answer|option|choice)\s*(?:is\s*)?:?\s*\(?([A-Z])\)?(?!\w)", t)) and ord(m[1]) - 65 < len(choices)
            else next((c for c in choices if c.strip().lower() == t.strip().rstrip(".").lower()), None))
        gold = (pick(gold) or gold) if _LETTER.fullmatch(gold.strip()) else gold
        if (picked := pick(cand)) is not None:
            return picked.strip().lower() == gold.strip().lower() or _equivalent(picked, gold, None)
    span, primary = _extract(cand)
    if gm := re.match(r"\s*(yes|no|true|false)\b(?!\s+[a-z])", gold, re.I):  # a yes/no gold, not 'No such values'
        said = span in ("Yes", "True") if span in ("Yes", "True", "No", "False") else (
            None if (neg := _negated(cand)) is None else not neg)  # no yes/no word: a negated statement means No
        return said is (gm[1].lower() in ("yes", "true"))
    csol = solutions(span) if span and span != "none" else None
    csol = boxed_by_math_verify(cand) if csol is None and "\\boxed" in cand else csol
    words = lambda s: {t[:-1] if len(t) > 3 and t.endswith("s") else t for t in (  # noqa: E731
        w.strip(".,;:!?\"'()") for w in re.sub(r"\s*([<>=≤≥≠+*/^]|\.\.\.|\s-\s)\s*", lambda m: m[1].strip(),
                                                  plain(s).lower()).split())
        if t and t not in STOP - {"all", "only"}}
    for alt, text_only in _alts(gold):
        if (gsol := None if text_only else _gold_solutions(alt)) is not None:
            if csol is not None and solutions_eq(gsol, csol):
                return True
        elif _NONE_GOLD.search(alt) or alt == "none":  # "no solutions": said outright, or a negated statement
            if span == "none" or (alt == "none" and (span or "").strip() == "0") or (  # "the number of ... is 0"
                    (csol is None or not primary) and _negated(cand) and not re.match(r"[\s*]*yes\b", cand, re.I)):
                return True
        elif (g := words(alt)) and (g <= words(cand) if len(g) > 1 else any(  # a formula: inside a word of cand
                w == next(iter(g)) or len(w) > 5 and w.endswith(next(iter(g))) for w in words(cand))) and (
                bool(_NEG.search(alt)) == _negated(cand)):  # a text gold: all its content words, same polarity
            return True
    return False


def equivalent(candidate: str | None, gold: str, choices: list[str] | None = None) -> bool:
    """Does the candidate (an answer, a one-sentence summary or a whole solution) state the gold answer?
    Never raises: unreadable input, a timeout (TIMEOUT_S, safe off the main thread) or an internal error is False."""
    if not (isinstance(candidate, str) and isinstance(gold, str) and candidate.strip() and gold.strip()):
        return False
    try:
        return bool(_bounded(_equivalent, candidate, gold, choices))
    except (Exception, _Timeout):
        return False


def answer_key(text: str | None) -> str | None:
    """Canonical answer for majority voting: '252' for 'C(10,5)' and 'There are 252 ways.'; formulas in variables as
    their values at fixed points ('f(n)=[...]': simplify() has no canonical form, values do); 'yes', 'no', 'none';
    normalised text otherwise; None without an answer. Never raises."""
    def key(text: str) -> str | None:
        if (span := extract_answer(text)) in (None, "none", "Yes", "True", "No", "False"):
            return {"Yes": "yes", "True": "yes", "No": "no", "False": "no"}.get(span, span)
        if (sol := solutions(span)) is None:
            return " ".join(span.lower().split())
        fmt = lambda v: "?" if v is None else str(v) if isinstance(v, sp.Rational) else str(sp.N(v, 9))  # noqa: E731
        scalar = lambda x: f"f({','.join(x[0])})=[{','.join(map(fmt, x[1]))}]" if x[0] else fmt(x[1][0])  # noqa: E731
        return " | ".join(sorted(" ; ".join(map(scalar, s)) for s in sol))
    try:
        return _bounded(key, text) if isinstance(text, str) and text.strip() else None
    except (Exception, _Timeout):
        return None
