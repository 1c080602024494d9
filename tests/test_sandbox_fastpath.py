"""The judge's fast path for batched assert checks (``fastpath.py``): it decides only checks
bounded by construction, and its verdicts and feedback are the checker's, word for word."""

from __future__ import annotations

import pytest

from selfdebug.sandbox import checker as checker_mod
from selfdebug.sandbox import fastpath, wire
from selfdebug.sandbox.asserts import split_assert
from selfdebug.sandbox.judge import Judge, SandboxConfig
from selfdebug.sandbox.prepare import Prepared, prepare_asserts
from selfdebug.schema import Problem, TestSuite

CALLEE = {"candidate", "f"}


def _fast(text, test_names=()):
    split = split_assert(text, CALLEE, "f", set(), set(test_names), 0)
    assert split is not None, text
    return split.fast


@pytest.mark.parametrize("text, kind", [
    ("assert f([1, 2], 3) == 6", "cmp"),
    ("assert candidate('a') == ['a', ('b', {1: None})]", "cmp"),
    ("assert f(1) != -2", "cmp"),
    ("assert 3 == f(1)", "cmp"),
    ("assert f(1) < 2.5", "cmp"),
    ("assert f(1) is None", "cmp"),
    ("assert f(1) is not True", "cmp"),
    ("assert f(1) == {1, 2}, 'a message'", "cmp"),
    ("assert abs(f(1.0) - 0.33) < 1e-06", "close"),
    ("assert abs(0.33 - f(1.0)) <= 1e-06", "close"),
    ("assert f(1)", "truth"),
    ("assert not f(1)", "not"),
    ("assert True, 'no call'", "const"),
])
def test_bounded_shapes_get_a_fast_check(text, kind):
    assert _fast(text).kind == kind


@pytest.mark.parametrize("text, test_names", [
    ("assert f(1) == f(2)", ()),  # two calls
    ("assert 0 < f(1) < 3", ()),  # a chain
    ("assert f(1) is 5", ()),  # identity with a non-singleton depends on the interpreter
    ("assert f(1) == 2 ** 10", ()),  # not a literal (work of the test's own)
    ("assert sorted(f(1)) == [1]", ()),  # the test's own work on the value
    ("assert abs(f(1) - 1) < 1e-6", {"abs"}),  # abs shadowed by the tests' prelude
    ("assert f(1) == 1, str([0] * 10)", ()),  # a message that is evaluated
    ("assert f(1) == xs", {"xs"}),
])
def test_other_shapes_stay_with_the_checker(text, test_names):
    assert _fast(text, test_names) is None


# --------------------------------------------------------------- agreement, value by value
PROBLEM = Problem(
    task_id="t/fast", prompt="", entry_point="f", canonical_solution="def f(x):\n    return x\n",
    tests=TestSuite(kind="assert", asserts=[
        "assert f(1) == 3",
        "assert f(2) == [1, (2, 3), {'a': {4, 5}}]",
        "assert abs(f(3) - 0.33) < 1e-06",
        "assert f(4) != 'x'",
        "assert not f(5)",
        "assert f(6) is None",
        "assert f(7) < [1, 2]",
        "assert f(8) == {(1, 2): [3.5, None]}, 'message'",
        "assert True, 'no call'",
    ]), source="test")

def _nested(depth: int):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


BIG = 2 ** 20_000  # past the fast path's int bound, within the wire's
VALUES = [3, 4, 3.0, True, 0.33 + 5e-7, 0.34, "x", "y", None, [], [1, (2, 3), {"a": {4, 5}}],
          [1, (2, 3), {"a": {4, 6}}], [1, [2, 3], {"a": {4, 5}}], {(1, 2): [3.5, None]},
          {(1, 2): [3.5, 0]}, [1, 1], [0, 9], [[1]], {1, 2}, frozenset({3}), float("nan"),
          float("inf"), 2 ** 9_000, -(2 ** 9_000), 10 ** 30, (1.5, -2), "é" * 50, 1 + 2j, b"\x00a",
          _nested(fastpath.MAX_DEPTH - 1)]
TOO_BIG = [BIG, -BIG, list(range(fastpath.MAX_ITEMS + 1)), set(range(fastpath.MAX_HASHED + 1)),
           {i: i for i in range(fastpath.MAX_HASHED + 1)}, "s" * (fastpath.MAX_CHARS + 1),
           _nested(fastpath.MAX_DEPTH + 1)]


class _NoRelay:
    """The checker's relay for plain values: they never make a request."""

    last_call = None

    def request(self, req, label):
        raise AssertionError(f"a plain value made a request: {req}")


def _both(prep, i, resps):
    """(fast path's verdict or None, the checker's verdict) on the same replies."""
    split, stmt = prep.batched[i], PROBLEM.tests.asserts[i]
    fast = fastpath.verdict(split, resps, split.labels, stmt, "f")
    relay = _NoRelay()
    ns = checker_mod._namespace(prep, PROBLEM, relay)
    slow = checker_mod._check_batched(prep, i, resps, split.labels, ns, relay, stmt, "f", 1.0)
    return fast, slow


@pytest.fixture(scope="module")
def prep():
    p = Prepared(limit=1.0)
    prepare_asserts(PROBLEM, p)
    assert len(p.batched) == len(PROBLEM.tests.asserts)
    assert all(s.fast is not None for s in p.batched)
    return p


def test_the_fast_path_agrees_with_the_checker_on_plain_values(prep):
    decided = 0
    for i in range(len(prep.batched) - 1):
        for value in VALUES:
            resps = [{"ok": wire.encode(value, returning=True)}]
            fast, slow = _both(prep, i, resps)
            assert fast is not None, (i, value)  # plain and small: decided in the judge
            assert fast == slow, (PROBLEM.tests.asserts[i], value)
            decided += fast[0] == "pass"
    assert decided >= 10  # both verdicts occur
    assert _both(prep, len(prep.batched) - 1, []) == (("pass", ""), ("pass", ""))


def test_a_call_that_raised_is_decided_in_the_judge(prep):
    for exc in [{"type": "ValueError", "msg": "bug", "line": 3, "frames": []},
                {"type": "MemoryError", "msg": ""}, "not a dict"]:
        fast, slow = _both(prep, 0, [{"exc": exc}])
        assert fast == slow and fast[0] in ("error", "memory")


def test_large_or_non_plain_values_go_to_the_checker(prep):
    for value in TOO_BIG:
        data = wire.encode(value, returning=True)
        assert not fastpath.bounded_plain(data)
        assert fastpath.verdict(prep.batched[0], [{"ok": data}], ["f(1)"],
                                PROBLEM.tests.asserts[0], "f") is None
    for data in [["r", "0", "10", "1"], ["h", 1, "generator"], ["q", [["i", "1"]]],
                 ["D", "1.5"], ["i", 5], ["l", "not a list"], "junk", [], ["d", [["i", "1"]]]]:
        assert fastpath.verdict(prep.batched[0], [{"ok": data}], ["f(1)"],
                                PROBLEM.tests.asserts[0], "f") is None, data
    assert fastpath.verdict(prep.batched[0], [{}], ["f(1)"], "assert f(1) == 3", "f") is None


# --------------------------------------------------------------- end to end, real processes
E2E = Problem(
    task_id="t/e2e", prompt="", entry_point="f", canonical_solution="def f(x):\n    return x\n",
    tests=TestSuite(kind="assert", asserts=[
        "assert f(1) == 1", "assert abs(f(2.0) - 2.0) < 1e-9", "assert f([1, {2: 'a'}]) == [1, {2: 'a'}]",
        "assert f(3) != 4", "assert f(0) == 0"]), source="test")

CANDIDATES = {
    "identity": "def f(x):\n    return x\n",
    "off": "def f(x):\n    return x + 1e-7 if isinstance(x, float) else x\n",
    "nested": "def f(x):\n    return [1, {2: 'b'}] if isinstance(x, list) else x\n",
    "huge": "def f(x):\n    return 2 ** 20000 if x == 3 else x\n",  # to the checker, passes
    "too_many": "def f(x):\n    return list(range(200000)) if x == 0 else x\n",  # checker, fails
    "raises": "def f(x):\n    if x == 3:\n        raise KeyError(x)\n    return x\n",
    "string": "def f(x):\n    return 'a'\n",
}


@pytest.mark.parametrize("stop_first", [False, True])
def test_judge_verdicts_with_and_without_the_fast_path_are_identical(tmp_path, monkeypatch,
                                                                     stop_first):
    def judge():
        return Judge([E2E], SandboxConfig(timeout_floor=2.0, calibrate=False,
                                          cache_dir=str(tmp_path),
                                          stop_on_first_failure=stop_first))

    j = judge()
    try:
        fast = {name: j.run("t/e2e", code) for name, code in CANDIDATES.items()
                if name in ("identity", "off", "nested", "raises", "string")}
        assert j.checker.starts == 0  # every check decided in the judge: no checker at all
        fast.update({name: j.run("t/e2e", CANDIDATES[name]) for name in ("huge", "too_many")})
        assert j.checker.starts == 1  # values past the bounds went to the checker
    finally:
        j.close()
    monkeypatch.setattr(fastpath, "verdict", lambda *a, **k: None)
    j = judge()
    try:
        slow = {name: j.run("t/e2e", code) for name, code in CANDIDATES.items()}
    finally:
        j.close()
    for name in CANDIDATES:
        a, b = fast[name], slow[name]
        assert (a.status, a.outcomes, a.feedback) == (b.status, b.outcomes, b.feedback), name
    assert fast["identity"].status == "passed" and fast["huge"].outcomes[3] == "pass"
    if stop_first:  # the first failure ends the sample, wherever it was decided
        assert fast["off"].outcomes == ["pass", "fail", "skipped", "skipped", "skipped"]
        assert fast["too_many"].outcomes == ["pass"] * 4 + ["fail"]
        return
    assert fast["off"].outcomes == ["pass", "fail", "pass", "pass", "pass"]
    assert fast["nested"].outcomes[2] == "fail" and "returned [1, {2: 'b'}]" in fast["nested"].feedback
    assert fast["raises"].outcomes[3] == "error" and "KeyError" in fast["raises"].feedback
    assert fast["too_many"].outcomes[4] == "fail"
    assert fast["string"].outcomes[:3] == ["fail", "fail", "fail"]  # abs('a' - 2.0): TypeError


KILLER = Problem(
    task_id="t/killer", prompt="", entry_point="f", canonical_solution="def f(x):\n    return x\n",
    tests=TestSuite(kind="assert", asserts=[
        "assert list(f(1)) == [1]", "assert f(2) == 2", "assert sorted(f(3)) == [3]",
        "assert f(4) == 4"]), source="test")


def test_a_check_that_kills_the_session_then_more_statements(tmp_path):
    """The checker's request on a returned handle kills the worker: that statement is
    ``killed``, a fresh session takes the rest (through proxies), and the next sample is
    judged as usual (nothing of the stopped batch left in the checker's channel)."""
    code = ("import os\ndef f(x):\n    def g():\n        os._exit(3)\n        yield x\n"
            "    return g() if x == 1 else x\n")
    for stop_first in (False, True):
        j = Judge([KILLER], SandboxConfig(timeout_floor=2.0, calibrate=False,
                                          cache_dir=str(tmp_path),
                                          stop_on_first_failure=stop_first))
        try:
            r = j.run("t/killer", code)
            assert r.outcomes == (["killed", "pass", "fail", "pass"] if not stop_first else
                                  ["killed", "skipped", "skipped", "skipped"]), r
            assert r.feedback.startswith("`assert list(f(1)) == [1]`: The program exited")
            r = j.run("t/killer", "def f(x):\n    return [x] if x in (1, 3) else x\n")
            assert (r.status, r.outcomes) == ("passed", ["pass"] * 4), r
        finally:
            j.close()
