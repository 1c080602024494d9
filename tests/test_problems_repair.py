"""LiveCodeBench and HumanEvalFix loaders on small files written in their public formats
(lcb_runner/benchmarks/code_generation.py; bigcode humanevalpack), judged by the real
sandbox (no hub here: the hub names go through the same parsers)."""

from __future__ import annotations

import base64
import json
import pickle
import zlib

import pytest

from selfdebug.problems import FormatError, load_problems
from selfdebug.sandbox.judge import Judge, SandboxConfig


def _lcb(qid, date, tests_public, tests_private, func_name=None, starter="", compress=False):
    private = json.dumps(tests_private)
    if compress:  # how code_generation_lite ships most private tests
        private = base64.b64encode(zlib.compress(pickle.dumps(private))).decode()
    return {"question_title": f"q{qid}", "question_content": f"Problem {qid}.",
            "platform": "leetcode" if func_name else "atcoder", "question_id": str(qid),
            "contest_id": "c1", "contest_date": date, "starter_code": starter,
            "difficulty": "easy", "public_test_cases": json.dumps(tests_public),
            "private_test_cases": private,
            "metadata": json.dumps({"func_name": func_name} if func_name else {})}


def _t(inp, out, kind):
    return {"input": inp, "output": out, "testtype": kind}


LCB = [
    _lcb(1, "2023-05-01T00:00:00", [_t("3\n4\n", "7\n", "stdin")],
         [_t("10\n-2\n", "8\n", "stdin")]),
    _lcb(2, "2024-09-15T00:00:00", [_t("[1, 2, 3]\n2", "[2, 4, 6]", "functional")],
         [_t("[]\n5", "[]", "functional")], func_name="scale",
         starter="class Solution:\n    def scale(self, nums: List[int], k: int) -> List[int]:\n",
         compress=True),
    _lcb(3, "2025-01-20T00:00:00", [_t("ab\n", "ba\n", "stdin")], []),
]

HEFIX = {
    "task_id": "Python/0", "entry_point": "add",
    "prompt": "def add(a: int, b: int) -> int:\n    \"\"\"Sum.\"\"\"\n",
    "declaration": "def add(a: int, b: int) -> int:\n",
    "canonical_solution": "    return a + b\n", "buggy_solution": "    return a - b\n",
    "bug_type": "operator misuse", "failure_symptoms": "incorrect output",
    "import": "", "test_setup": "",
    "test": "\n\nMETADATA = {}\n\ndef check(add):\n    assert add(1, 2) == 3\n"
            "    assert add(0, 0) == 0\n    assert add(-1, 5) == 4\n\ncheck(add)\n",
    "example_test": "def check(add):\n    assert add(1, 2) == 3\ncheck(add)\n",
    "signature": "add(a: int, b: int) -> int", "docstring": "Sum.",
    "instruction": "Write a Python function `add(a: int, b: int) -> int` to solve...",
}


def _write(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_livecodebench_records_windows_and_judging(tmp_path):
    f = _write(tmp_path / "test.jsonl", LCB)
    problems = load_problems(f)
    assert [p.task_id for p in problems] == ["lcb/1", "lcb/2", "lcb/3"]
    stdin, func, _ = problems
    assert stdin.tests.kind == "io" and stdin.tests.inputs == ["3\n4\n", "10\n-2\n"]
    assert "stdin" in stdin.prompt and stdin.source == "livecodebench"
    assert func.tests.kind == "assert" and len(func.tests.asserts) == 2  # private decoded
    assert func.entry_point == "scale" and "class Solution" in func.prompt
    # release-date windows (inclusive), as lcb_runner's --start_date / --end_date
    assert [p.task_id for p in load_problems(f, date_from="2024-01-01")] == ["lcb/2", "lcb/3"]
    assert [p.task_id for p in load_problems(f, date_from="2024-01-01",
                                             date_to="2024-12-31")] == ["lcb/2"]
    assert load_problems(f, split="test")  # the file is split "test"
    with pytest.raises(FormatError, match="release-date window applies to LiveCodeBench"):
        load_problems(_write(tmp_path / "h.jsonl", [HEFIX]), date_from="2024-01-01")

    judge = Judge(problems, SandboxConfig(timeout_floor=2.0, cache_dir=str(tmp_path / "c")))
    try:
        ok_stdin = "a = int(input())\nb = int(input())\nprint(a + b)\n"
        assert judge.run("lcb/1", ok_stdin).status == "passed"
        assert judge.run("lcb/1", "print(7)\n").status == "failed"
        ok_func = ("from typing import List\nclass Solution:\n"
                   "    def scale(self, nums: List[int], k: int) -> List[int]:\n"
                   "        return tuple(x * k for x in nums)\n")  # a tuple counts as a list
        assert judge.run("lcb/2", ok_func).status == "passed"
        wrong = ok_func.replace("x * k", "x + k")
        r = judge.run("lcb/2", wrong)
        assert r.status == "failed" and r.passed == 1  # the empty list still passes
    finally:
        judge.close()


def test_livecodebench_bad_private_tests_are_named(tmp_path):
    rec = dict(LCB[0], private_test_cases=base64.b64encode(zlib.compress(
        pickle.dumps(FormatError("x")))).decode())
    with pytest.raises(FormatError, match="refused"):
        load_problems(_write(tmp_path / "bad.jsonl", [rec]))
    rec = dict(LCB[0], private_test_cases="not json, not base64 !")
    with pytest.raises(FormatError, match="neither JSON nor base64"):
        load_problems(_write(tmp_path / "bad2.jsonl", [rec]))


def test_humanevalfix_prompt_tests_and_judging(tmp_path):
    (p,) = load_problems(_write(tmp_path / "humanevalpack.jsonl", [HEFIX]))
    assert p.source == "humanevalfix" and p.entry_point == "add"
    assert p.prompt.startswith("Fix bugs in add.") and "return a - b" in p.prompt
    assert "def check(add)" in p.prompt  # HumanEvalFixTests: the tests are in the prompt
    assert len(p.tests.asserts) == 3 and "check(add)" not in p.tests.prelude
    judge = Judge([p], SandboxConfig(timeout_floor=2.0, cache_dir=str(tmp_path / "c")))
    try:
        assert judge.run(p.task_id, p.canonical_solution).status == "passed"
        buggy = judge.run(p.task_id, HEFIX["declaration"] + HEFIX["buggy_solution"])
        assert buggy.status == "failed" and buggy.passed == 1  # add(0, 0) == 0 either way
    finally:
        judge.close()


@pytest.mark.ray
@pytest.mark.timeout(420)
def test_repair_benchmarks_are_columns_of_the_eval_report(ray_cluster, tmp_path):
    """`selfdebug eval` on HumanEvalFix and LiveCodeBench files, with the test-double
    engines through the real sandbox: the oracle (the reference solution) fixes every
    HumanEvalFix task; LiveCodeBench ships no reference, so nothing passes there."""
    from selfdebug.evaluate.config import BenchmarkSpec, EvalConfig, ModelSpec
    from selfdebug.evaluate.pipeline import run_eval
    from selfdebug.evaluate.report import table2

    fix = dict(HEFIX, task_id="Python/1")
    hef = _write(tmp_path / "humanevalpack.jsonl", [HEFIX, fix])
    lcb = _write(tmp_path / "test.jsonl", LCB)
    cfg = EvalConfig(out_dir=str(tmp_path / "out"), n=1, rounds=1, ks=[1],
                     models=[ModelSpec("oracle", engine="oracle")],
                     benchmarks=[BenchmarkSpec("HumanEvalFix", str(hef)),
                                 BenchmarkSpec("LiveCodeBench", str(lcb),
                                               date_from="2024-01-01")])
    data = run_eval(cfg, log=print)
    init = {r["benchmark"]: r for r in data["results"] if r["mode"] == "init"}
    assert init["HumanEvalFix"]["pass@1"] == 100.0 and init["HumanEvalFix"]["tasks"] == 2
    assert init["LiveCodeBench"]["pass@1"] == 0.0 and init["LiveCodeBench"]["tasks"] == 2
    md = (tmp_path / "out" / "results.md").read_text()
    assert table2(data["results"], ["oracle"], data["benchmarks"], data["modes"], [1]) in md
    assert "| Model | Method | HumanEvalFix pass@1 | LiveCodeBench pass@1 |" in md
