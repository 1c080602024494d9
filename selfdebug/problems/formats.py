"""Parsers from the raw public record formats to ``Problem``; one function per format."""

from __future__ import annotations

import ast
import builtins
import json
import re
import warnings

from selfdebug.problems.evalplus_inputs import mbpp_deserialize_inputs
from selfdebug.schema import Problem, TestSuite

# MBPP's standard splits (Austin et al. 2021) by task id.
MBPP_SPLITS = {"prompt": range(1, 11), "test": range(11, 511), "validation": range(511, 601),
               "train": range(601, 975)}


class FormatError(ValueError):
    pass


def _parse(source: str) -> ast.Module:
    with warnings.catch_warnings():  # benchmark code with "\w" in plain strings
        warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
        return ast.parse(source)


# ---------------------------------------------------------------- HumanEval-style check()
def split_check(test_code: str) -> tuple[str, list[str]]:
    """Split a ``def check(candidate)`` module into (prelude, test statements).

    Each top-level statement of check's body that contains an assert is one test; the
    statements before it (setup) are folded into it so that every test runs in order in one
    namespace.
    """
    tree = _parse(test_code)
    check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"),
                 None)
    if check is None:
        raise FormatError("test code has no `def check(candidate)`")
    prelude = [n for n in tree.body if n is not check]
    tests, pending = [], []
    for stmt in check.body:
        pending.append(stmt)
        if any(isinstance(n, ast.Assert) for n in ast.walk(stmt)):
            tests.append("\n".join(ast.unparse(s) for s in pending))
            pending = []
    if pending and tests:
        tests[-1] += "\n" + "\n".join(ast.unparse(s) for s in pending)
    return "\n".join(ast.unparse(n) for n in prelude), tests


def humaneval(rec: dict, source: str = "humaneval") -> Problem:
    prelude, asserts = split_check(rec["test"])
    # The prompt's helpers (e.g. `poly` in HumanEval/32) are used by the tests: they run
    # trusted from the benchmark text, never from the candidate's copy.
    return Problem(
        task_id=rec["task_id"],
        prompt=rec["prompt"],
        entry_point=rec["entry_point"],
        canonical_solution=rec["prompt"] + rec["canonical_solution"],
        tests=TestSuite(kind="assert", asserts=asserts, prelude=rec["prompt"] + "\n" + prelude),
        source=source,
        completion_prefix=rec["prompt"],
    )


def _entry_from_asserts(asserts: list[str], code: str = "") -> str:
    """The function the tests call: one the reference code defines (it may shadow a builtin,
    as MBPP 126's ``sum`` does), else the first non-builtin called."""
    try:
        defined = {n.name for n in ast.walk(_parse(code)) if isinstance(n, ast.FunctionDef)}
    except SyntaxError:
        defined = set()
    fallback = ""
    for a in asserts:
        for node in ast.walk(_parse(a.strip())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id in defined:
                    return node.func.id
                if not fallback and not hasattr(builtins, node.func.id):
                    fallback = node.func.id
    return fallback


def _mbpp_prompt(text: str, tests: list[str]) -> str:
    # As in Austin et al. (2021) and the usual MBPP prompts: the task and all of its tests
    shown = "\n".join(t.strip() for t in tests)
    return f"{text.strip()}\nYour code should pass these tests:\n{shown}\n"


def mbpp(rec: dict, challenge: bool = False) -> Problem:
    """MBPP (full): judged on ``test_list``; ``challenge`` adds ``challenge_test_list`` (the
    harder hidden tests, opt-in: the benchmark's reported numbers use test_list only)."""
    tests = list(rec["test_list"])
    if challenge:
        tests += list(rec.get("challenge_test_list") or [])
    code = rec["code"].replace("\r\n", "\n")
    return Problem(
        task_id=f"Mbpp/{rec['task_id']}",
        prompt=_mbpp_prompt(rec["text"], rec["test_list"]),
        entry_point=_entry_from_asserts(rec["test_list"], code),
        canonical_solution=code,
        tests=TestSuite(kind="assert", asserts=[t.strip() for t in tests],
                        setup=(rec.get("test_setup_code") or "").replace("\r\n", "\n")),
        source="mbpp",
    )


def mbpp_sanitized(rec: dict) -> Problem:
    return Problem(
        task_id=f"Mbpp/{rec['task_id']}",
        prompt=_mbpp_prompt(rec["prompt"], rec["test_list"]),
        entry_point=_entry_from_asserts(rec["test_list"], rec["code"]),
        canonical_solution=rec["code"],
        tests=TestSuite(kind="assert", asserts=[t.strip() for t in rec["test_list"]],
                        prelude="\n".join(rec.get("test_imports") or [])),
        source="mbpp_sanitized",
    )


def _json_field(value):
    return json.loads(value) if isinstance(value, str) else value


def evalplus(rec: dict, plus: bool = True) -> Problem:
    """EvalPlus HumanEval+ / MBPP+: inputs judged against the canonical solution's outputs."""
    base = _json_field(rec["base_input"])
    extra = _json_field(rec.get("plus_input") or []) if plus else []
    is_mbpp = rec["task_id"].startswith("Mbpp/")
    if is_mbpp:  # tuples, sets and complex numbers that JSON stored as lists and strings
        base = mbpp_deserialize_inputs(rec["task_id"], base)
        extra = mbpp_deserialize_inputs(rec["task_id"], extra)
    prompt = rec["prompt"]
    canonical = rec["canonical_solution"] if is_mbpp else prompt + rec["canonical_solution"]
    return Problem(
        task_id=rec["task_id"],
        prompt=prompt,
        entry_point=rec["entry_point"],
        canonical_solution=canonical,
        tests=TestSuite(kind="call", inputs=list(base) + list(extra), outputs=None,
                        atol=float(rec.get("atol") or 0), base_count=len(base)),
        source=("mbpp_plus" if is_mbpp else "humaneval_plus"),
        completion_prefix="" if is_mbpp else prompt,
    )


def _io_lists(pairs) -> tuple[list[str], list[str]]:
    inputs, outputs = [], []
    for p in pairs:
        out = p["output"]
        inputs.append(p["input"])
        outputs.append("\n".join(out) if isinstance(out, list) else out)
    return inputs, outputs


def codecontests_packed(rec: dict) -> Problem:
    """The one-record-per-problem layout (problem_id, description, solution, tests)."""
    tests = _json_field(rec["tests"])
    inputs, outputs = _io_lists(tests)
    return Problem(
        task_id=str(rec["problem_id"]),
        prompt=rec["description"],
        entry_point="",
        canonical_solution=rec.get("solution") or "",
        tests=TestSuite(kind="io", inputs=inputs, outputs=outputs),
        source="codecontests",
    )


def codecontests_hf(rec: dict) -> Problem:
    """deepmind/code_contests: public + private + generated tests, Python 3 solutions."""
    inputs, outputs = [], []
    for key in ("public_tests", "private_tests", "generated_tests"):
        t = rec.get(key) or {}
        inputs += list(t.get("input", []))
        outputs += list(t.get("output", []))
    sols = rec.get("solutions") or {}
    canonical = next((s for lang, s in zip(sols.get("language", []), sols.get("solution", []))
                      if lang == 3), "")  # 3 = PYTHON3 in the dataset's enum
    return Problem(task_id=str(rec["name"]), prompt=rec["description"], entry_point="",
                   canonical_solution=canonical,
                   tests=TestSuite(kind="io", inputs=inputs, outputs=outputs),
                   source="codecontests")


def _apps_suite(io: dict, fn_name: str) -> TestSuite:
    if fn_name:
        return TestSuite(kind="call", inputs=list(io["inputs"]), outputs=list(io["outputs"]))
    outs = ["\n".join(o) if isinstance(o, list) else o for o in io["outputs"]]
    ins = ["\n".join(i) if isinstance(i, list) else i for i in io["inputs"]]
    return TestSuite(kind="io", inputs=ins, outputs=outs)


def apps(rec: dict) -> Problem:
    """codeparrot/apps: question, solutions (JSON list), input_output (JSON), starter_code."""
    io = _json_field(rec.get("input_output") or "{}") or {}
    if not io.get("inputs"):
        raise FormatError(f"APPS problem {rec.get('problem_id')} has no tests")
    fn_name = io.get("fn_name", "")
    sols = _json_field(rec.get("solutions") or "[]") or []
    starter = rec.get("starter_code") or ""
    return Problem(task_id=f"apps/{rec['problem_id']}",
                   prompt=rec["question"] + (f"\n{starter}" if starter else ""),
                   entry_point=fn_name, canonical_solution=sols[0] if sols else "",
                   tests=_apps_suite(io, fn_name), source="apps")


def _mapcoder_args(text: str) -> list:
    """MapCoder's APPS inputs: one Python literal per line (one argument each)."""
    try:
        return [ast.literal_eval(line) for line in text.split("\n") if line.strip()]
    except (ValueError, SyntaxError):
        return [text]


def apps_mapcoder(rec: dict) -> Problem:
    """MapCoder's reformatted APPS subset (no reference solutions)."""
    tests = _json_field(rec["test_list"])
    starter = rec.get("starter_code") or ""
    m = re.search(r"def\s+(\w+)\s*\(", starter)
    if m:
        suite = TestSuite(kind="call", inputs=[_mapcoder_args(t["input"]) for t in tests],
                          outputs=[t["output"] for t in tests])
    else:
        ins, outs = _io_lists(tests)
        suite = TestSuite(kind="io", inputs=ins, outputs=outs)
    return Problem(task_id=f"apps/{rec['id']}", prompt=rec["description"] + (
        f"\n{starter}" if starter.strip() else ""), entry_point=m.group(1) if m else "",
        canonical_solution="", tests=suite, source="apps")


def detect(rec: dict) -> str:
    """Name of the format a record is in (or raise FormatError)."""
    keys = set(rec)
    if {"question_content", "public_test_cases", "private_test_cases", "contest_date"} <= keys:
        return "livecodebench"
    if {"task_id", "declaration", "buggy_solution", "entry_point", "test"} <= keys:
        return "humanevalfix"
    if {"task_id", "prompt", "entry_point", "canonical_solution"} <= keys and (
            "base_input" in keys or "plus_input" in keys):
        return "evalplus"
    if {"task_id", "prompt", "entry_point", "canonical_solution", "test"} <= keys:
        return "humaneval"
    if {"text", "code", "test_list"} <= keys:
        return "mbpp"
    if {"prompt", "code", "test_list"} <= keys:
        return "mbpp_sanitized"
    if {"problem_id", "description", "tests"} <= keys:
        return "codecontests_packed"
    if {"name", "description"} <= keys and ({"public_tests", "private_tests"} & keys):
        return "codecontests_hf"
    if {"question", "input_output"} <= keys:
        return "apps"
    if {"description", "test_list", "starter_code"} <= keys:
        return "apps_mapcoder"
    raise FormatError(
        f"unrecognised record with keys {sorted(keys)}; expected HumanEval (task_id, prompt, "
        "entry_point, canonical_solution, test), MBPP (text, code, test_list), sanitized MBPP "
        "(prompt, code, test_list), EvalPlus (… base_input, plus_input), CodeContests "
        "(description + tests or public_tests/private_tests), APPS (question, input_output), "
        "LiveCodeBench (question_content, public_test_cases, private_test_cases, contest_date) "
        "or HumanEvalFix (task_id, declaration, buggy_solution, entry_point, test)")


PARSERS = {
    "humaneval": humaneval,
    "mbpp": mbpp,
    "mbpp_sanitized": mbpp_sanitized,
    "evalplus": evalplus,
    "codecontests_packed": codecontests_packed,
    "codecontests_hf": codecontests_hf,
    "apps": apps,
    "apps_mapcoder": apps_mapcoder,
}


def _register_repair_formats() -> None:
    # repair.py builds on this module's helpers, so its parsers join the table here
    from selfdebug.problems.repair import humanevalfix, livecodebench

    PARSERS.update(livecodebench=livecodebench, humanevalfix=humanevalfix)


_register_repair_formats()
