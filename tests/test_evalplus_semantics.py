"""EvalPlus semantics without a sandbox: MBPP+ input deserialisation and the output
comparison, each checked against the `evalplus` package's own code where it has one."""

from __future__ import annotations

import inspect
import math
import re

import pytest

from selfdebug.problems.evalplus_inputs import mbpp_deserialize_inputs
from selfdebug.problems.formats import evalplus as parse_evalplus
from selfdebug.sandbox.compare import CallOracle, evalplus_check, values_equal


@pytest.fixture(autouse=True)
def _no_evalplus_memory_cap(monkeypatch):
    # evalplus caps its child's address space at 4 GiB; a pytest process that imported torch
    # already maps more (the cap is no part of the verdict rule)
    monkeypatch.setenv("EVALPLUS_MAX_MEMORY_BYTES", "-1")


# One input per case of EvalPlus' table, shaped as the JSON release stores it.
SHAPES = {
    "args_tuples": [[1, 2], [3, [4, 5]]],
    "args_lists_of_tuples": [[[1, 2], [3]], [[4, 5]]],
    "first_list_of_tuples": [[[1, 2], [3, 4]], 7],
    "second_tuple": [5, [1, 2, 3]],
    "first_tuple": [[1, 2, 3], 4],
    "args_tuples_of_tuples": [[[1, 2], [3]], [[4]]],
    "all_tuples": [[1, [2, [3, 4]]], [5]],
}
GROUPS = {
    "args_tuples": [2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579,
                    596, 616, 630, 726, 740, 744, 809],
    "args_lists_of_tuples": [63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614,
                             780],
    "first_list_of_tuples": [75, 413, 444, 753],
    "second_tuple": [106, 750],
    "first_tuple": [250, 405, 446, 617, 720, 763, 808],
    "args_tuples_of_tuples": [259, 401, 445],
    "all_tuples": [580, 615, 791],
}
SINGLE = {115: [[[1, 2], [], [3]]], 124: ["1.5", "(1+2j)"], 278: [[[1, 2], 3, [4]]],
          307: [[1, 2], 3, 4], 722: [{"a": [1, 2], "b": [3]}, 5, 6], 252: ["(1-2j)"],
          3: [[1, 2], "x"]}  # 3: a task without a case, passed as it is


def _cases():
    for group, numbers in GROUPS.items():
        for n in numbers:
            yield n, SHAPES[group]
    yield from SINGLE.items()


def _typed(x):
    """repr with every container's type (repr alone does not tell {} from set())."""
    if isinstance(x, list | tuple | set):
        return (type(x).__name__, [_typed(i) for i in (sorted(x) if isinstance(x, set) else x)])
    if isinstance(x, dict):
        return ("dict", [(k, _typed(v)) for k, v in x.items()])
    return (type(x).__name__, repr(x))


def test_mbpp_deserialisation_is_evalplus_own_case_for_case():
    ev = pytest.importorskip("evalplus.data.mbpp", reason="the evalplus package is a dev extra")
    # every task number EvalPlus' loader names is covered here, and no other
    numbers = {int(n) for n in re.findall(r"\b\d+\b", inspect.getsource(
        ev.mbpp_deserialize_inputs)) if int(n) > 1}
    assert numbers == {n for n, _ in _cases()} - {3}
    for number, inp in _cases():
        ours = mbpp_deserialize_inputs(f"Mbpp/{number}", [inp])
        theirs = ev.mbpp_deserialize_inputs(f"Mbpp/{number}", [inp])
        assert _typed(ours) == _typed(theirs), number


def test_mbpp_plus_record_carries_rebuilt_inputs():
    rec = {"task_id": "Mbpp/252", "prompt": '"""\nconvert\n"""\n', "entry_point": "convert",
           "canonical_solution": "import cmath\ndef convert(n):\n    return cmath.polar(n)\n",
           "base_input": [["(1+2j)"]], "plus_input": [["(3-4j)"]], "atol": 0}
    p = parse_evalplus(rec)
    assert p.tests.inputs == [[1 + 2j], [3 - 4j]] and p.tests.base_count == 1
    rec2 = dict(rec, task_id="Mbpp/2", base_input=[[[1, 2], [2, 3]]], plus_input=[])
    assert parse_evalplus(rec2).tests.inputs == [[(1, 2), (2, 3)]]


@pytest.mark.parametrize("got, expected, atol, ok", [
    (math.inf, math.inf, 0, True),           # MBPP+ canonical outputs: `inf` is `inf`
    ([1.0, math.inf], [1.0, math.inf], 0, True),
    (-math.inf, math.inf, 0, False),
    (math.nan, math.nan, 0, False),          # neither == nor allclose accepts NaN
    (1.0 + 1e-7, 1.0, 0, True),              # floats: 1e-6 when the task has no atol
    (1.0 + 1e-5, 1.0, 0, False),
    (1, 1.0, 0, True),                       # == first
    (1.0000001, 1, 0, False),                # int expected: no tolerance
    ([1, 2.0000001], [1, 2.0], 0, False),    # a mixed list is not "floats": exact
    ([1.0, 2.0000001], [1.0, 2.0], 0, True),
    ((1.0,), [1.0], 0, False),               # tolerance needs the same type
    ([1.0, 2.0], [1.0, 2.0, 3.0], 0, False),
    ("a", "b", 1e-3, False),                 # allclose on strings: an error, so a fail
    (True, 1, 0, True),
])
def test_comparison_is_evalplus_unsafe_execute(got, expected, atol, ok):
    assert values_equal(got, expected, atol) is ok
    # and evalplus' own judging says the same (an identity program returns `got`)
    assert _evalplus_details([got], [expected], atol) == [ok]


def _evalplus_details(outputs, expected, atol, dataset="humaneval", entry_point="f"):
    ev = pytest.importorskip("evalplus.eval", reason="the evalplus package is a dev extra")
    code = f"def {entry_point}(x, *rest):\n    return x\n"
    stat, details = ev.untrusted_check(dataset, code, [[o] for o in outputs], entry_point,
                                       expected=expected, atol=atol,
                                       ref_time=[0.0] * len(outputs))
    return [bool(d) for d in details]


def test_float_tolerance_stays_on_for_later_inputs_of_the_same_run():
    # EvalPlus sets atol = 1e-6 at the first float expected value and keeps it: a later
    # list of ints then compares with allclose (same type and length)
    oracle = CallOracle(0.0, base_count=2)
    big = 10**8
    assert not CallOracle(0.0).check(0, [big + 5], [big])  # ints: exact
    assert oracle.check(0, 0.5, 0.5)
    assert oracle.check(1, [big + 5], [big])  # within rtol 1e-7 once the switch is on
    assert not oracle.check(2, [big + 5], [big])  # the plus run starts from the task atol
    assert _evalplus_details([0.5, [big + 5]], [0.5, [big]], 0.0) == [True, True]
    assert _evalplus_details([[big + 5]], [[big]], 0.0) == [False]


def test_special_oracles():
    # (the MBPP oracles' reference values come from evalplus' _special_oracle module)
    xs = [-6, 11, -6, 1]  # (x-1)(x-2)(x-3)
    assert evalplus_check(2.0000001, 1.0, 1e-4, dataset="humaneval", entry_point="find_zero",
                          args=[xs])[0]
    assert not evalplus_check(2.5, 1.0, 1e-4, dataset="humaneval", entry_point="find_zero",
                              args=[xs])[0]
    mbpp = {"dataset": "mbpp"}
    assert evalplus_check([3, 1], [1, 3], 0, entry_point="similar_elements", **mbpp)[0]
    assert evalplus_check("match", True, 0, entry_point="text_match_three", **mbpp)[0]
    assert not evalplus_check(None, True, 0, entry_point="text_match_three", **mbpp)[0]
    assert evalplus_check(False, None, 0, entry_point="check_str", **mbpp)[0]
    # the reference's False is "not None": EvalPlus expects True then
    assert not evalplus_check(False, False, 0, entry_point="check_str", **mbpp)[0]
    assert evalplus_check("anything", False, 0, entry_point="are_equivalent", **mbpp)[0]
    assert evalplus_check(0, 7, 0, entry_point="sum_div", **mbpp)[0]
    # |1-2| + |2-5| + |3-6| = 7: the oracle's value passes whatever the reference returned
    assert evalplus_check(7, 9, 0, entry_point="digit_distance_nums", args=[123, 256],
                          **mbpp)[0]
    assert not evalplus_check(0, 9, 0, entry_point="digit_distance_nums", args=[123, 256],
                              **mbpp)[0]


def test_mbpp_plus_not_none_task_judged_on_whether_a_match_came_back(tmp_path):
    """Mbpp/787 style: the reference returns re.Match objects (no plain data); EvalPlus keeps
    only "is not None" of them, and so does the judge (real sandbox)."""
    from selfdebug.sandbox.judge import Judge, SandboxConfig
    from selfdebug.schema import Problem, TestSuite

    ref = "import re\ndef text_match_three(text):\n    return re.search('ab{3}?', text)\n"
    p = Problem(task_id="Mbpp/787", prompt="", entry_point="text_match_three",
                canonical_solution=ref, source="mbpp_plus",
                tests=TestSuite(kind="call", inputs=[["ac"], ["dc"], ["abbbba"]], base_count=2))
    judge = Judge([p], SandboxConfig(timeout_floor=2.0, cache_dir=str(tmp_path)))
    try:
        assert judge.run(p.task_id, ref).status == "passed"
        as_bool = "def text_match_three(text):\n    return 'abbb' in text\n"
        assert judge.run(p.task_id, as_bool).status == "passed"
        never = judge.run(p.task_id, "def text_match_three(text):\n    return None\n")
        assert never.status == "failed" and never.passed == 2
    finally:
        judge.close()
