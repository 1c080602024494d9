"""The judge's own verdicts on batched assert statements whose check is bounded by construction.

Most batched checks compare the one value the candidate returned with a literal
(``assert f(x) == [1, 2]``, ``abs(f(x) - 0.33) < 1e-6``: their shapes are ``asserts.FastCheck``).
Sending them to the checker process costs pipe round trips and its CPU on every sample,
while the comparison is bounded work when the value is plain and small: builtin types only
(rebuilt from the wire, so no user-defined ``__eq__``: None, bool, int, float, complex,
str, bytes and lists, tuples, sets, frozensets and dicts of those), at most ``MAX_ITEMS`` elements
nested ``MAX_DEPTH`` deep, ints of ``MAX_INT_BITS``, ``MAX_CHARS`` of strings in all, and
``MAX_HASHED`` set and dict entries (values with equal hashes make building a set quadratic,
and the hashes of ints and tuples are predictable). The judge decides those statements
itself, worded as the checker words them (``feedback``); a statement whose call raised is
decided here whatever its check (the check never runs). Everything else — other shapes,
larger or non-plain values, anything malformed — goes to the checker, which stays the one
place where test code runs.
"""

from __future__ import annotations

from selfdebug.sandbox import feedback as fb
from selfdebug.sandbox import wire

MAX_ITEMS = 100_000
MAX_DEPTH = 32
MAX_INT_BITS = 10_000
MAX_CHARS = 1 << 20
MAX_HASHED = 1_000

# "i": the wire's decimal ints, 40 digits at most; "c": complex, two floats
_LEAVES = frozenset({"n", "b", "f", "i", "c"})
_SEQUENCES = frozenset({"l", "t", "S", "F"})
_HASHED = frozenset({"S", "F", "d"})


def bounded_plain(data) -> bool:
    """Whether a tagged wire value is plain data within the bounds above. Linear in the
    value and stopping at the first bound passed; anything unexpected is not plain (the
    checker then words the verdict, as for every value it decodes)."""
    items = chars = hashed = 0
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        items += 1
        if items > MAX_ITEMS or depth > MAX_DEPTH or not (
                isinstance(value, list) and len(value) >= 1):
            return False
        tag = value[0]
        if tag in _LEAVES:
            continue
        if len(value) != 2:
            return False
        body = value[1]
        if tag == "x":  # hex ints: "-0x" and four bits a digit
            if not (isinstance(body, str) and len(body) <= MAX_INT_BITS // 4 + 3):
                return False
        elif tag in ("s", "y"):  # str, bytes (as hex)
            chars += len(body) if isinstance(body, str) else MAX_CHARS + 1
            if chars > MAX_CHARS:
                return False
        elif tag in _SEQUENCES or tag == "d":
            if not isinstance(body, list):
                return False
            if tag in _HASHED:
                hashed += len(body)
                if hashed > MAX_HASHED:
                    return False
            if tag == "d":
                if not all(isinstance(p, list) and len(p) == 2 for p in body):
                    return False
                stack.extend((x, depth + 1) for p in body for x in p)
            else:
                stack.extend((x, depth + 1) for x in body)
        else:  # ranges, handles, builtins, deques, Decimals ...: the checker's
            return False
    return True


def verdict(split, resps: list, labels: list, stmt: str,
            entry_point: str) -> tuple[str, str] | None:
    """``(outcome, note)`` of a batched statement from its calls' raw replies, exactly as
    the checker would give it, or None when the checker must decide."""
    raised = fb.call_raised(resps, stmt, entry_point)
    if raised is not None:
        return raised
    fast = split.fast
    if fast is None:
        return None
    value, last = None, None
    if fast.kind != "const":
        data = resps[0].get("ok")
        if not bounded_plain(data):
            return None
        try:
            value = wire.decode(data, trusted=True)
        except wire.WireError:
            return None  # the checker words an unreadable value
        last = (labels[0], value)
    try:
        holds = fast.holds(value)
    except Exception as e:  # noqa: BLE001  as the check's own code would raise
        return "fail", fb.check_choked(fb.statement_text(stmt, entry_point), e, last)
    if holds:
        return "pass", ""
    return "fail", fb.check_failed(fb.statement_text(stmt, entry_point), last)
