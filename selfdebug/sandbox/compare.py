"""Trusted comparison of outputs with expected values.

Call suites of EvalPlus benchmarks (HumanEval+, MBPP+) are judged exactly as EvalPlus'
``evalplus.eval.unsafe_execute`` judges them (read from its source, github.com/evalplus/
evalplus, evalplus/eval/__init__.py and _special_oracle.py): ``out == exp`` first; floats
then compare with ``numpy.allclose(rtol=1e-7, atol)`` after a type and length check, where
atol is the task's, or 1e-6 once an expected value has been a float (or list of floats) —
a switch that stays on for the later inputs of the same run (base and plus inputs are two
runs); plus the special oracles of HumanEval/32 and of some MBPP+ tasks. So ``inf`` equals
``inf`` (exactly equal) and NaN never equals NaN (neither ``==`` nor ``allclose`` say so).
"""

from __future__ import annotations

import math

# evalplus/eval/_special_oracle.py: MBPP+ tasks judged by set equality of the outputs, and
# tasks whose outputs are only checked for being None or not (re.Match objects and the like).
MBPP_OUTPUT_SET_EQ_TASKS = frozenset({
    "similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly",
    "larg_nnum", "intersection_array", "find_dissimilar", "Diff"})
MBPP_OUTPUT_NOT_NONE_TASKS = frozenset({"check_str", "text_match_three", "text_starta_endb"})
FLOAT_ATOL = 1e-6  # EvalPlus' tolerance for float outputs of tasks without their own atol


def is_floats(x) -> bool:
    """EvalPlus' ``is_floats``: a float, or a non-empty list/tuple of floats only."""
    if isinstance(x, float):
        return True
    if isinstance(x, list | tuple) and x:
        return all(isinstance(i, float) for i in x)
    np = _numpy_if_loaded()
    if np is not None and isinstance(x, np.ndarray):
        return x.dtype in (np.float64, np.float32)
    return False


def _numpy_if_loaded():
    import sys

    return sys.modules.get("numpy")


def _allclose(out, exp, atol: float) -> bool:
    import numpy as np

    return bool(np.allclose(out, exp, rtol=1e-07, atol=atol))


def _poly(xs: list, x: float) -> float:
    # _special_oracle._poly: HumanEval/32's checker evaluates the polynomial with math.pow
    return sum(coeff * math.pow(x, i) for i, coeff in enumerate(xs))


def _surface_area(base_edge, height):  # _special_oracle._surface_Area (Mbpp/581)
    slant_height = math.sqrt((base_edge / 2) ** 2 + height**2)
    return round(base_edge**2 + 4 * (base_edge * slant_height) / 2)


def _digit_distance_nums(num1, num2):  # _special_oracle._digit_distance_nums (Mbpp/558)
    a, b = str(num1), str(num2)
    width = max(len(a), len(b))
    return sum(abs(int(x) - int(y)) for x, y in zip(a.zfill(width), b.zfill(width)))


def evalplus_check(got, expected, atol: float, *, dataset: str = "", entry_point: str = "",
                   args: list | tuple = ()) -> tuple[bool, float]:
    """One input of an EvalPlus run: (passed, atol for the next input of the same run).

    ``dataset`` is "humaneval" or "mbpp" (special oracles), ``args`` the call's arguments.
    Any exception while comparing is a failed test, as in EvalPlus (it catches everything).
    """
    try:
        exact = got == expected
        if dataset == "mbpp":
            if entry_point == "are_equivalent":  # Mbpp/164
                exact = True
            elif entry_point == "sum_div":  # Mbpp/295
                exact = exact or got == 0
            elif entry_point == "surface_Area":  # Mbpp/581
                exact = exact or abs(got - _surface_area(*args)) <= atol
            elif entry_point == "digit_distance_nums":  # Mbpp/558
                exact = exact or got == _digit_distance_nums(*args)
            elif entry_point in MBPP_OUTPUT_SET_EQ_TASKS:
                exact = set(got) == set(expected)
            elif entry_point in MBPP_OUTPUT_NOT_NONE_TASKS:
                # EvalPlus keeps only "is not None" of the reference output
                want = expected is not None
                exact = got == want if isinstance(got, bool) else want == (got is not None)
        if dataset == "humaneval" and entry_point == "find_zero":  # HumanEval/32: a root
            return bool(abs(_poly(*args, got)) <= atol), atol  # the atol switch is skipped
    except Exception:  # noqa: BLE001
        return False, atol
    if atol == 0 and is_floats(expected):
        atol = FLOAT_ATOL
    try:
        if not exact and atol != 0:
            if type(got) is not type(expected):
                return False, atol
            if isinstance(expected, list | tuple) and len(got) != len(expected):
                return False, atol
            return _allclose(got, expected, atol), atol
        return bool(exact), atol
    except Exception:  # noqa: BLE001
        return False, atol


def values_equal(got, expected, atol: float = 0.0) -> bool:
    """EvalPlus' comparison of one output (no special oracle, no earlier inputs)."""
    return evalplus_check(got, expected, atol)[0]


class CallOracle:
    """EvalPlus' verdicts for one sample's call tests, fed in input order.

    ``evalplus_dataset``: "humaneval" / "mbpp" for EvalPlus sources (special oracles), else
    "" (plain :func:`values_equal`). ``base_count``: where the plus run starts (EvalPlus
    judges base and plus inputs in two runs, each starting from the task's atol).
    """

    def __init__(self, atol: float, *, evalplus_dataset: str = "", entry_point: str = "",
                 base_count: int | None = None):
        self.task_atol = self.atol = atol
        self.dataset, self.entry_point, self.base_count = evalplus_dataset, entry_point, base_count

    def check(self, i: int, got, expected, args=()) -> bool:
        if i == self.base_count:
            self.atol = self.task_atol  # the plus run starts afresh
        ok, self.atol = evalplus_check(got, expected, self.atol, dataset=self.dataset,
                                       entry_point=self.entry_point, args=args)
        return ok


def keeps_only_not_none(source: str, entry_point: str) -> bool:
    """MBPP+ tasks whose reference output EvalPlus reduces to "is not None" (so a returned
    object that cannot cross the wire, e.g. a re.Match, still gives an expected value)."""
    return evalplus_dataset(source) == "mbpp" and entry_point in MBPP_OUTPUT_NOT_NONE_TASKS


def evalplus_dataset(source: str) -> str:
    """The EvalPlus dataset name of a Problem.source ("" when not an EvalPlus benchmark)."""
    return {"humaneval_plus": "humaneval", "mbpp_plus": "mbpp"}.get(source, "")


def apps_equal(got, expected) -> bool:
    """APPS call-based semantics: outputs are often wrapped in a one-element list."""
    if isinstance(got, tuple):
        got = list(got)
    if values_equal(got, expected):
        return True
    return isinstance(expected, list) and len(expected) == 1 and values_equal(got, expected[0])


def _norm_lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def stdout_equal(got: str, expected: str) -> bool:
    """Line-wise after trimming trailing whitespace; token-wise as a fallback."""
    if _norm_lines(got) == _norm_lines(expected):
        return True
    return got.split() == expected.split()
