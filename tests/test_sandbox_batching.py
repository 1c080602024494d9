"""Assertion tests sent as one batch of calls: same verdicts, feedback and order as proxies."""

from __future__ import annotations

import pytest

from selfdebug.sandbox.asserts import split_assert
from selfdebug.sandbox.judge import Judge, SandboxConfig
from selfdebug.schema import Problem, TestSuite

CALLEE = {"candidate", "f"}


def _split(text, program_names=(), test_names=()):
    return split_assert(text, CALLEE, "f", set(program_names), set(test_names), 0)


@pytest.mark.parametrize("text, n_calls", [
    ("assert f([1, 2], 3) == 6", 1),
    ("assert candidate('ab' + 'c', 3 * 19) == [3, 19]", 1),
    ("assert abs(f(1.0/3) - 0.5) < 1e-6", 1),
    ("assert f(x=1, y=(2, 3)) == {'a': -1}", 1),
    ("assert f(1) == f(2), 'same'", 2),
    ("assert f(int, list(range(3))) == [0]", 1),
    ("assert True, 'no call at all'", 0),
])
def test_plain_calls_with_static_arguments_are_batched(text, n_calls):
    split = _split(text)
    assert split is not None and len(split.calls) == n_calls


@pytest.mark.parametrize("text, program_names, test_names", [
    ("assert f(root) == 2", {"root"}, ()),  # a name the program's setup defines
    ("assert f(xs) == 2", (), {"xs"}),  # a name the tests define (could be mutated state)
    ("assert f(1) == 1 or f(2) == 2", (), ()),  # short circuit: f(2) may never run
    ("assert [f(i) for i in range(3)] == [0, 1, 2]", (), ()),
    ("assert f(1) == 1, str(f(1))", (), ()),  # the message calls only on failure
    ("assert f(f(1)) == 1", (), ()),  # an argument the candidate computes
    ("assert list(map(f, [1])) == [1]", (), ()),  # the candidate passed around
    ("assert f(*[1, 2]) == 3", (), ()),
    ("assert f(open('/etc/passwd')) == 1", (), ()),  # not a pure builtin
    ("for i in range(3):\n    assert f(i) == i", (), ()),
])
def test_anything_else_keeps_the_proxy_path(text, program_names, test_names):
    assert _split(text, program_names, test_names) is None


SQ = Problem(
    task_id="t/sq", prompt="", entry_point="sq", canonical_solution="def sq(x, k=1):\n    return x * x * k\n",
    tests=TestSuite(kind="assert", asserts=[
        "assert sq(2) == 4", "assert True", "assert sq(3, k=2) == 18", "assert sq(-1) == 1",
        "for x in range(3):\n    assert sq(x) == x * x"]),
    source="test")


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    j = Judge([SQ], SandboxConfig(timeout_floor=1.0, cache_dir=str(tmp_path_factory.mktemp("c"))))
    assert len(j.prepare(SQ).batched) == 4  # the for loop goes through proxies
    yield j
    j.close()


def test_batched_and_proxied_statements_mix(judge):
    r = judge.run("t/sq", SQ.canonical_solution)
    assert (r.status, r.passed, r.total) == ("passed", 5, 5), r
    r = judge.run("t/sq", "def sq(x, k=1):\n    return x * x\n")
    assert r.outcomes == ["pass", "pass", "fail", "pass", "pass"]
    assert r.feedback.startswith("`assert sq(3, k=2) == 18` failed: sq(3, k=2) returned 9")


def test_a_hang_after_a_wrong_answer_keeps_the_earlier_verdicts(judge):
    # The first call answers at once, the third never returns: its verdict must not hide
    # the first failure (results leave the sandbox call by call).
    code = "def sq(x, k=1):\n    while k == 2:\n        pass\n    return x + 1\n"
    r = judge.run("t/sq", code)
    assert r.outcomes == ["fail", "pass", "timeout", "skipped", "skipped"], r
    assert r.status == "failed"
    assert r.feedback.startswith("`assert sq(2) == 4` failed: sq(2) returned 3")


def test_exception_and_non_plain_return_in_a_batch(judge):
    r = judge.run("t/sq", "def sq(x, k=1):\n    if x < 0:\n        raise ValueError('neg')\n"
                          "    return x * x * k\n")
    assert r.outcomes == ["pass", "pass", "pass", "error", "pass"]
    assert "ValueError: neg" in r.feedback
    # a generator comes back as a handle; comparing it with 4 is simply False
    r = judge.run("t/sq", "def sq(x, k=1):\n    yield x\n")
    assert r.outcomes[0] == "fail" and "sq(2) returned <generator object>" in r.feedback


def test_a_crash_mid_batch_restarts_for_the_remaining_tests(judge):
    code = ("import os\ndef sq(x, k=1):\n    if k == 2:\n        os._exit(3)\n"
            "    return x * x * k\n")
    r = judge.run("t/sq", code)
    assert r.outcomes[:3] == ["pass", "pass", "killed"] and r.outcomes[3:] == ["pass", "pass"], r
