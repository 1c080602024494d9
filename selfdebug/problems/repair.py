"""Repair benchmarks beyond the paper: LiveCodeBench and HumanEvalFix, read in their public
record formats.

LiveCodeBench (github.com/LiveCodeBench/LiveCodeBench, lcb_runner/benchmarks/
code_generation.py; hub: livecodebench/code_generation_lite, one JSON object per problem):
``question_title, question_content, platform, question_id, contest_id, contest_date``
(ISO time), ``starter_code, difficulty, public_test_cases`` (JSON list of ``{input, output,
testtype}``), ``private_test_cases`` (the same, as JSON or as base64(zlib(pickle(JSON
text)))), ``metadata`` (JSON, ``func_name`` for LeetCode problems). ``stdin`` tests compare
standard output; ``functional`` tests call ``Solution().<func_name>(*args)`` with one JSON
value per input line, and a returned tuple counts as a list (lcb_runner/evaluation/
testing_util.py, grade_call_based). Release-date windows select problems by contest_date,
as its ``--start_date/--end_date``. Its *self-repair* scenario (explanation + fixed program
from the feedback of a wrong program) is the evaluation's Expl+Refine on these problems.

HumanEvalFix (bigcode-evaluation-harness, bigcode_eval/tasks/humanevalpack.py; hub:
bigcode/humanevalpack, config "python"): ``task_id, prompt, declaration,
canonical_solution, buggy_solution, entry_point, test`` (``def check(<entry_point>)`` plus
a ``check(<entry_point>)`` call), ... The task: the buggy function and its tests, "Fix bugs
in <entry_point>." (the harness' HumanEvalFixTests prompt); the answer is judged by the tests.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import pickle
import zlib
from datetime import datetime

from selfdebug.problems.formats import FormatError, _parse, split_check
from selfdebug.schema import Problem, TestSuite

# Trusted-side comparison of LiveCodeBench's functional tests (grade_call_based).
LCB_PRELUDE = """def _lcb_equal(prediction, expected):
    if isinstance(prediction, tuple):
        prediction = list(prediction)
    return prediction == expected
"""


class _StringsOnly(pickle.Unpickler):
    """LiveCodeBench pickles a JSON *string*; nothing else may be unpickled from the data."""

    def find_class(self, module, name):
        raise FormatError(f"private_test_cases: pickled {module}.{name} refused (a str "
                          "is expected)")


def _private_tests(value) -> list[dict]:
    if isinstance(value, list):
        return value
    try:
        return json.loads(value)
    except ValueError:
        pass
    try:
        text = _StringsOnly(io.BytesIO(zlib.decompress(base64.b64decode(value)))).load()
    except (ValueError, zlib.error, pickle.UnpicklingError, EOFError) as e:
        raise FormatError(f"private_test_cases is neither JSON nor base64/zlib/pickle "
                          f"({type(e).__name__}: {e})") from None
    return json.loads(text)


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


def contest_date(rec: dict) -> datetime:
    return datetime.fromisoformat(str(rec["contest_date"]))


def livecodebench(rec: dict, date_from: str = "", date_to: str = "") -> Problem | None:
    """A LiveCodeBench code-generation problem; None when outside [date_from, date_to]
    (``YYYY-MM-DD``, inclusive, compared with contest_date as lcb_runner does)."""
    when = contest_date(rec)
    if date_from and when < datetime.strptime(date_from, "%Y-%m-%d"):
        return None
    if date_to and when > datetime.strptime(date_to, "%Y-%m-%d"):
        return None
    tests = list(_json(rec["public_test_cases"])) + _private_tests(rec["private_test_cases"])
    if not tests:
        raise FormatError(f"LiveCodeBench problem {rec['question_id']} has no tests")
    meta = _json(rec.get("metadata") or "{}") or {}
    starter = rec.get("starter_code") or ""
    kinds = {t["testtype"] for t in tests}
    if kinds == {"functional"}:
        fn = meta.get("func_name")
        if not fn:
            raise FormatError(f"LiveCodeBench problem {rec['question_id']}: functional tests "
                              "but no metadata.func_name")
        asserts = []
        for t in tests:
            args = [json.loads(line) for line in t["input"].split("\n")]
            asserts.append(f"assert _lcb_equal(Solution().{fn}(*{args!r}), "
                           f"{json.loads(t['output'])!r})")
        suite = TestSuite(kind="assert", asserts=asserts, prelude=LCB_PRELUDE)
        how = f"Use this starter code:\n```python\n{starter}\n```"
    elif kinds == {"stdin"}:
        fn = ""
        suite = TestSuite(kind="io", inputs=[t["input"] for t in tests],
                          outputs=[t["output"] for t in tests])
        how = ("Read the inputs from stdin, solve the problem and write the answer to stdout."
               + (f"\n```python\n{starter}\n```" if starter.strip() else ""))
    else:
        raise FormatError(f"LiveCodeBench problem {rec['question_id']}: test types "
                          f"{sorted(kinds)} (expected all stdin or all functional)")
    return Problem(task_id=f"lcb/{rec['question_id']}",
                   prompt=f"{rec['question_content'].strip()}\n\n{how}\n", entry_point=fn,
                   canonical_solution="", tests=suite, source="livecodebench")


def _without_check_call(test: str) -> str:
    """The test module minus its top-level ``check(...)`` call (the judge calls the tests)."""
    tree = _parse(test)
    tree.body = [n for n in tree.body if not (
        isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)
        and isinstance(n.value.func, ast.Name) and n.value.func.id == "check")]
    return ast.unparse(tree)


def humanevalfix(rec: dict) -> Problem:
    """HumanEvalFix (Python): fix the buggy function, judged by the HumanEval tests."""
    ep = rec["entry_point"]
    prelude, asserts = split_check(_without_check_call(rec["test"]))
    if not asserts:
        raise FormatError(f"HumanEvalFix {rec['task_id']}: no assertions in its test")
    context = rec["declaration"] + rec["buggy_solution"] + "\n" + rec["test"]
    imports = (rec.get("import") or "") + (rec.get("test_setup") or "")
    return Problem(
        task_id=rec["task_id"],
        prompt=f"Fix bugs in {ep}.\n```python\n{context.strip()}\n```\n",
        entry_point=ep,
        canonical_solution=imports + rec["declaration"] + rec["canonical_solution"],
        # the check's parameter is named after the entry point: the program's function
        tests=TestSuite(kind="assert", asserts=asserts,
                        prelude="\n".join(x for x in (imports, prelude) if x.strip())),
        source="humanevalfix",
    )
