"""Trusted comparison of outputs with expected values."""

from __future__ import annotations

import math


def _is_floaty(x) -> bool:
    if isinstance(x, float):
        return True
    if isinstance(x, list | tuple) and x:
        return all(isinstance(v, float | int) and not isinstance(v, bool) for v in x) and any(
            isinstance(v, float) for v in x)
    return False


def _close(a, b, atol: float, rtol: float = 1e-7) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_close(x, y, atol, rtol) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        if math.isnan(a) and math.isnan(b):
            return True
        return abs(a - b) <= atol + rtol * abs(b)
    return a == b


def values_equal(got, expected, atol: float = 0.0) -> bool:
    """EvalPlus semantics: exact equality, except floats compare with atol/rtol."""
    if _is_floaty(expected):
        try:
            return _close(got, expected, atol)
        except TypeError:
            return False
    try:
        return bool(got == expected)
    except Exception:  # noqa: BLE001
        return False


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
