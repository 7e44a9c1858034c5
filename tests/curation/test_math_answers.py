"""curation.math_answers: extraction, equivalence and grouping keys on CHAMP-style answers."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from curation import math_answers as ma
from curation.math_answers import answer_key, equivalent, extract_answer, gold_alternatives


@pytest.mark.parametrize("candidate,gold", [
    # one-sentence summaries as CHAMP records them, golds as CHAMP writes them
    ("There are 76 involutions on the set {1, 2, 3, 4, 5, 6}.", "76"),
    ("The number of involutions on the set {1, 2, 3, 4, 5, 6} is 76.", "76"),
    ("There are 504 strings of length 5 using the digits {0, 1, ..., 9}.", "2*C(10, 5), or equivalently 504"),
    ("The expansion of (x+y+z)^1999 will have 2,001,000 terms.", "2001000"),
    ("The smallest value of the function (x^2 + 2) / sqrt(x^2 + 1) for real x is 2, which occurs at x = 0.", "2"),
    ("The number of diagonals of a convex polygon with n vertices is n^2/2 - 3n/2.", "n(n-3)/2"),
    ("The closed form is \\(n \\cdot 2^{n-2} \\cdot (n+1)\\).", "n(n+1)*2^(n-2)"),
    ("The number of ways is (n-1)!/2.", "n!/(2n)"),
    ("It is given by the binomial coefficient C(n, 4) = n! / (4! * (n - 4)!).",
     "C(n, 4), or an equivalent form such as n(n-1)(n-2)(n-3)/4!"),
    ("The count is given by the formula (n(n+1)/2)².", "sum_(i=1)^n i^3, or equivalently (n(n+1)/2)^2"),
    ("The count is $\\sum_{i=1}^{n} i^3$.", "(n(n+1)/2)^2"),
    ("The limit of the sequence exists and is equal to 3.", "The limit exists and is equal to 3"),
    ("The possible value of a mod 5 is 0, given that f(x) = x^5 - x + a is divisible by x - b.",
     "0 is the only possible value"),
    ("The value of \\( k \\) is \\( k = -3 \\).", "-3 is the only possible value"),
    ("There are 98 values of n in the set {1, 2, ..., 100} for which the inequality holds.", "98 values"),
    ("$3^{105}+4^{105} \\equiv 0 \\pmod{7}$.", "0"),
    ("The largest value is \\(\\frac{1}{\\sqrt{3}}\\), achieved when \\(a = b = c\\).",
     "sqrt(3)/3, or equivalently 1/sqrt(3)"),
    ("The number of rooks placements is n factorial (n!).", "n!"),
    ("is 2^{\\lfloor n/2 \\rfloor} \\lfloor n/2 \\rfloor!", "2^floor(n/2)*floor(n/2)!"),
    # lists, assignments, sets of solutions
    ("The only positive integer solution is x = 6, y = 5.", "x=6, y=5"),
    ("The solutions are (x, y) = (2, 1) and (1, 2).", "(x=1, y=2) and (x=2, y=1)"),
    ("The values are a = 3 and b = -4.", "a=3, b=-4"),
    ("The only integer solution is x = 0 and y = 0.", "x=y=0"),
    ("The possible values of x^2 mod 30 are 1 and 19.", "1 and 19"),
    ("The possible values of f(x) are f(x) = 0 and f(x) = 1, where f is constant.", "f(x)=0 or f(x)=1"),
    ("The solutions are \\( x = a(1 \\pm \\sqrt{2}) \\) and \\( x = \\frac{a(1 \\pm \\sqrt{5})}{2} \\).",
     "a(1±sqrt(2)), a(1±sqrt(5))/2"),
    # no solutions, text golds
    ("There are no integer solutions to the equation x^2 - 3y^2 = 17.", "No integer solutions"),
    ("There are no pairs of positive odd integers (a, b) both under 100.", "0 pairs"),
    ("The sequence does not have a finite limit as n goes to infinity.", "The limit does not exist"),
    ("The sequence a_n/b_n is monotonically increasing.", "Monotonically increasing"),
    ("For all integer values of n ≥ 3, x(n) is less than y(n-1).", "x(n)<y(n-1) for all n≥3"),
    ("For all 1000 values of the sequence we have x_n > 4/5.", "1000 (i.e., all values)"),
    # yes / no
    ("No, it is not possible to label the edges of a cube that way.", "No"),
    ("The expression 385^1980 + 18^1980 is not a perfect square.", "No"),
    ("Yes, 2n is always a sum of two perfect squares.", "Yes"),
    ("True", "yes"),
    # whole solutions
    ("We count the cases.\nSo the final answer is 252.", "C(10, 5)"),
    ("Adding up all the cases carefully gives $\\boxed{\\dfrac{5}{14}}$.", "5/14"),
])
def test_equivalent(candidate, gold):
    assert equivalent(candidate, gold) is True


@pytest.mark.parametrize("candidate,gold", [
    ("There are 76 involutions on the set {1, 2, 3, 4, 5, 6}.", "6"),  # the 6 of the set is no answer
    ("There are 6 involutions on the set {1, 2, 3}.", "76"),
    ("The number of involutions on the set {1, 2, 3, 4, 5, 6} is 75.", "76"),
    ("The answer is 2^n.", "2^(n-1)"),
    ("The number of ways is n(n-1)/2.", "n(n+1)/2"),
    ("is 2^{n/2} (n/2)!", "2^floor(n/2)*floor(n/2)!"),  # equal at even n only
    ("The number of ways is n*(n+1)*(2n+1)/6 - 1.", "n(n+1)(2n+1)/6"),
    ("The probability is approximately 3.57%.", "5/14, or approximately 35.7%"),
    ("The probability is 0.34.", "1/3"),
    ("The possible values of x^2+2y^2 mod 8 are 0, 1, 2, and 3.", "1 and 3"),
    ("The only positive integer solution is x = 4, y = 1.", "x=6, y=5"),
    ("The only solution is (x, y) = (2, 1).", "(x=1, y=2) and (x=2, y=1)"),
    ("The smallest value is 2, and it occurs when x = 0.", "0"),
    ("There are no integer solutions.", "x=2, y=1"),
    ("The integer solutions are (x, y) = (13, 4) and (-13, 4).", "No integer solutions"),
    ("The polynomial x^4 + x^2 + 1 is irreducible over the integers.", "(x^2+x+1)(x^2-x+1)"),
    ("The sequence is not monotonically increasing.", "Monotonically increasing"),
    ("Yes, it is possible.", "No"),
    ("Without further analysis, it is not possible to determine whether it is prime.", "No"),
    ("$3^{105}+4^{105} \\equiv 2 \\pmod{7}$.", "0"),
])
def test_not_equivalent(candidate, gold):
    assert equivalent(candidate, gold) is False


def test_fractions_decimals_percents():
    assert equivalent("1/2", "0.5") and equivalent("0.5", "1/2") and equivalent("50%", "1/2")
    assert equivalent("0.357", "5/14, or approximately 35.7%") and equivalent("35.7%", "5/14")
    assert equivalent("0.3333", "1/3") and not equivalent("0.4", "1/4")  # a decimal counts to its shown precision
    assert equivalent("1,000", "1000") and not equivalent("1, 000", "1000")


def test_latex_and_plain_forms():
    assert equivalent("$2^{n-1}$", "2^(n-1)") and equivalent("2^(n-1)", "2^{n-1}")
    assert equivalent("\\frac{n(n+1)}{2}", "n(n+1)/2") and equivalent("n(n+1)/2", "\\frac{n(n+1)}{2}")
    assert equivalent("C(10, 5)", "252") and equivalent("\\binom{10}{5}", "252") and equivalent("(10 choose 5)", "252")
    assert not equivalent("C(10, 4)", "252")


def test_multiple_choice():
    choices = ["12", "14", "16"]
    assert equivalent("(B)", "B", choices) and equivalent("B", "14", choices) and equivalent("14", "B", choices)
    assert equivalent("The answer is (B).", "14", choices) and not equivalent("The answer is (C).", "14", choices)
    assert not equivalent("A", "B", choices)
    assert equivalent("red", "A", ["Red", "Blue"]) and not equivalent("blue", "A", ["Red", "Blue"])


@pytest.mark.parametrize("candidate,gold", [
    (None, "5"), ("", "5"), ("   ", "5"), ("5", ""), (5, "5"), ("5", None), ("asdf qwerty", "5"), ("(((", "1/0"),
    ("10^10^10^10", "1"), ("(12!)!", "1"), ("99999999!", "1"), ("__import__('os').system('true')", "0"),
    ("\\frac{", "1"), ("\\boxed{", "1"), ("x" * 5000, "x"), ("1/0", "1"), ("=", "1"), ("1/0", "1/0"),
])
def test_garbage_is_false_and_never_raises(candidate, gold):
    start = time.monotonic()
    assert equivalent(candidate, gold) is False
    assert time.monotonic() - start < 3


def test_timeout_guard_on_main_and_worker_threads(monkeypatch):
    monkeypatch.setattr(ma, "TIMEOUT_S", 0.2)
    monkeypatch.setattr(ma, "_equivalent", lambda *a: time.sleep(2) or True)
    start = time.monotonic()
    assert equivalent("1", "1") is False  # main thread: SIGALRM interrupts the sleep
    with ThreadPoolExecutor(2) as pool:  # worker threads: no signals, the guard stops waiting
        assert list(pool.map(lambda _: equivalent("1", "1"), range(2))) == [False, False]
    assert time.monotonic() - start < 1.5


def test_same_verdicts_from_worker_threads():
    cases = [("There are 252 ways.", "C(10, 5)"), ("n^2/2 - 3n/2", "n(n-3)/2"), ("No.", "Yes"), ("7", "8")]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda c: equivalent(*c), cases * 3))
    assert threaded == [equivalent(*c) for c in cases] * 3 == [True, True, False, False] * 3
    assert threading.current_thread() is threading.main_thread()


def test_extract_answer():
    assert extract_answer("The answer is \\boxed{42}.") == "42"
    assert extract_answer("Thus, the final answer is 7.") == "7"
    assert extract_answer("There are 76 involutions on {1, 2, 3, 4, 5, 6}.") == "76"
    assert extract_answer("The smallest value is 2, which occurs at x = 0.") == "2"
    assert extract_answer("No, a polyhedron with an odd number of odd faces does not exist.") == "No"
    assert extract_answer("There are no integer solutions.") == "none"
    assert extract_answer("") is None and extract_answer(None) is None


def test_answer_key_groups_equivalent_answers():
    assert answer_key("C(10,5)") == answer_key("There are 252 ways.") == answer_key("\\binom{10}{5}") == "252"
    assert answer_key("\\frac{n(n+1)}{2}") == answer_key("The sum is n(n+1)/2.") == answer_key("(n^2+n)/2")
    assert answer_key("n(n+1)/2") != answer_key("n(n-1)/2")
    assert answer_key("Yes, it is.") == "yes" and answer_key("No.") == "no"
    assert answer_key("x = 6, y = 5") == answer_key("(x, y) = (6, 5)")
    assert answer_key(None) is None and answer_key("") is None


def test_gold_alternatives():
    assert gold_alternatives("C(10, 5), or equivalently 252") == ["C(10, 5)", "252"]
    assert gold_alternatives("5/14, or approximately 35.7%") == ["5/14", "35.7%"]
    assert gold_alternatives("100 (i.e., all values)") == ["100", "all values"]
    assert gold_alternatives("(n+1)/(r+1)") == ["(n+1)/(r+1)"]
    assert isinstance(ma.VERSION, str) and ma.VERSION
