"""A /v1/debug request body → a validated `DebugRequest` and a `selfdebug.schema.Problem`.

Every rejection is a `BadRequest` naming the field (``tests.asserts[2]``) and the reason.
Assert lines are evaluated on the sandbox's trusted side (names the program defines are
proxies into the sandbox, see sandbox/judge.py), so a request's assert lines are held to a
small side-effect-free subset: literals, comparisons, ``not``/``and``/``or``, arithmetic
without ``*``/``**`` (no unbounded values from a short line), subscripts, calls of the
program's functions and of a few pure builtins, and ``math.isclose``. Anything else —
attribute access, imports, lambdas, comprehensions, dunder names — is a 4xx, never run.
"""

from __future__ import annotations

import ast
import builtins
import json
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

from selfdebug.problems.formats import _entry_from_asserts
from selfdebug.schema import Problem, TestSuite
from selfdebug.serve.config import DebugLimits

MODES = ("refine", "explain_refine")
_FIELDS = {"problem", "code", "tests", "error", "mode", "max_rounds", "stream", "entry_point",
           "max_tokens", "temperature", "seed"}
_TEST_FORMS = {"asserts", "io", "function", "inputs", "outputs"}

_PURE_BUILTINS = {"abs", "round", "len", "sorted", "set", "frozenset", "list", "tuple", "dict",
                  "str", "int", "float", "bool", "min", "max", "sum", "any", "all", "isinstance",
                  "type", "repr", "reversed"}
_NODES = (ast.Assert, ast.Compare, ast.BoolOp, ast.UnaryOp, ast.BinOp, ast.Call, ast.keyword,
          ast.Constant, ast.List, ast.Tuple, ast.Set, ast.Dict, ast.Subscript, ast.Slice,
          ast.Name, ast.Load, ast.Attribute,
          ast.cmpop, ast.boolop, ast.Not, ast.USub, ast.UAdd,
          ast.Add, ast.Sub, ast.Div, ast.FloorDiv, ast.Mod)


class BadRequest(ValueError):
    """A request the service refuses: HTTP ``status`` with a reason naming ``field``."""

    def __init__(self, field_name: str, reason: str, status: int = 422):
        super().__init__(f"{field_name}: {reason}" if field_name else reason)
        self.field, self.reason, self.status = field_name, reason, status


@dataclass
class DebugRequest:
    problem: str
    code: str
    mode: str
    max_rounds: int
    stream: bool = False
    error: str = ""
    tests: TestSuite | None = None  # None: no tests, the fix comes back unverified
    entry_point: str = ""
    max_tokens: int = 512
    temperature: float = 0.0
    seed: int | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    def to_problem(self, time_limit: float) -> Problem | None:
        """The ad-hoc problem the sandbox judges (None without tests). The time limit is
        fixed: a request has no reference solution to calibrate one from."""
        if self.tests is None:
            return None
        return Problem(task_id=f"request/{self.request_id}", prompt=self.problem,
                       entry_point=self.entry_point, canonical_solution="", tests=self.tests,
                       source="request", time_limit=time_limit)


def decode_body(raw: bytes) -> dict:
    """Bytes → the JSON object, or BadRequest (400) saying what is wrong with the body."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest("body", f"not valid UTF-8 (byte {e.start})", 400) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadRequest("body", f"malformed JSON: {e.msg} at line {e.lineno} column "
                                 f"{e.colno}", 400) from None
    if not isinstance(data, dict):
        raise BadRequest("body", f"expected a JSON object, got {type(data).__name__}", 400)
    return data


def _str(data: dict, key: str, limit: int, *, required: bool = False) -> str:
    value = data.get(key)
    if value is None:
        if required:
            raise BadRequest(key, "missing (a string is required)")
        return ""
    if not isinstance(value, str):
        raise BadRequest(key, f"expected a string, got {type(value).__name__}")
    if len(value) > limit:
        raise BadRequest(key, f"too long: {len(value)} characters, at most {limit}", 413)
    return value


def _int(data: dict, key: str, default: int, lo: int, hi: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(key, f"expected an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise BadRequest(key, f"out of range: {value} (allowed {lo}..{hi})")
    return value


def parse_request(data: dict, limits: DebugLimits) -> DebugRequest:
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise BadRequest(unknown[0], f"unknown field (known: {', '.join(sorted(_FIELDS))})")
    problem = _str(data, "problem", limits.max_problem_chars, required=True)
    code = _str(data, "code", limits.max_code_chars, required=True)
    error = _str(data, "error", limits.max_error_chars)
    mode = data.get("mode", "explain_refine")
    if mode not in MODES:
        raise BadRequest("mode", f"expected one of {list(MODES)}, got {mode!r}")
    rounds = _int(data, "max_rounds", limits.default_rounds, 1, limits.max_rounds)
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream", f"expected true or false, got {type(stream).__name__}")
    max_tokens = _int(data, "max_tokens", limits.max_tokens, 1, limits.max_tokens)
    temperature = data.get("temperature", limits.temperature)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) \
            or not 0 <= temperature <= 2:
        raise BadRequest("temperature", f"expected a number in 0..2, got {temperature!r}")
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest("seed", f"expected an integer, got {type(seed).__name__}")
    entry = _str(data, "entry_point", 200)
    if entry and not entry.isidentifier():
        raise BadRequest("entry_point", f"not a Python identifier: {entry!r}")
    tests, entry = parse_tests(data.get("tests"), code, entry, limits)
    if tests is None and not error:
        raise BadRequest("tests", "give tests (to verify the fix) and/or an error message "
                                  "('error')")
    return DebugRequest(problem=problem, code=code, mode=mode, max_rounds=rounds,
                        stream=stream, error=error, tests=tests, entry_point=entry,
                        max_tokens=max_tokens, temperature=float(temperature), seed=seed)


def parse_tests(spec: Any, code: str, entry: str,
                limits: DebugLimits) -> tuple[TestSuite | None, str]:
    """``tests`` → (suite, entry point). Forms: a list of assert lines (or
    ``{"asserts": [...]}``); ``{"io": [{"input", "output"}, ...]}``; ``{"function": name,
    "inputs": [[args...], ...], "outputs": [expected, ...]}``."""
    if spec is None:
        return None, entry
    if isinstance(spec, list):
        spec = {"asserts": spec}
    if not isinstance(spec, dict):
        raise BadRequest("tests", f"expected a list of assert lines or an object, got "
                                  f"{type(spec).__name__}")
    unknown = sorted(set(spec) - _TEST_FORMS)
    if unknown:
        raise BadRequest(f"tests.{unknown[0]}", "unknown field (forms: asserts | io | "
                                                "function + inputs + outputs)")
    forms = [k for k in ("asserts", "io", "function") if k in spec]
    if len(forms) != 1:
        raise BadRequest("tests", "give exactly one of 'asserts', 'io', or 'function' (with "
                                  "'inputs' and 'outputs')")
    form = forms[0]
    if form != "function" and ({"inputs", "outputs"} & set(spec)):
        raise BadRequest("tests.inputs", "'inputs'/'outputs' go with 'function'")
    items = spec[form] if form != "function" else spec.get("inputs")
    where = f"tests.{form if form != 'function' else 'inputs'}"
    if not isinstance(items, list):
        raise BadRequest(where, f"expected a list, got {type(items).__name__}")
    if not items:
        raise BadRequest(where, "empty: give at least one test")
    if len(items) > limits.max_tests:
        raise BadRequest(where, f"too many tests: {len(items)}, at most {limits.max_tests}", 413)
    if form == "asserts":
        asserts = [_check_assert(a, f"tests.asserts[{i}]", limits) for i, a in enumerate(items)]
        entry = entry or _entry_from_asserts(asserts, code)
        if not entry:
            raise BadRequest("tests.asserts", "no function call found: which function do the "
                                              "asserts test? (set 'entry_point')")
        return TestSuite(kind="assert", asserts=asserts), entry
    if form == "io":
        inputs, outputs = [], []
        for i, pair in enumerate(items):
            if not isinstance(pair, dict) or set(pair) != {"input", "output"}:
                raise BadRequest(f"tests.io[{i}]", "expected {\"input\": str, \"output\": str}")
            for k in ("input", "output"):
                _str(pair, k, limits.max_test_chars, required=True)
            inputs.append(pair["input"])
            outputs.append(pair["output"])
        return TestSuite(kind="io", inputs=inputs, outputs=outputs), ""
    name = spec["function"]
    if not isinstance(name, str) or not name.isidentifier():
        raise BadRequest("tests.function", f"expected a function name, got {name!r}")
    outputs = spec.get("outputs")
    if not isinstance(outputs, list) or len(outputs) != len(items):
        raise BadRequest("tests.outputs", f"expected a list of {len(items)} expected values "
                                          "(one per inputs entry)")
    for i, args in enumerate(items):
        if not isinstance(args, list):
            raise BadRequest(f"tests.inputs[{i}]", "expected a list of arguments")
        if len(json.dumps(args)) > limits.max_test_chars or \
                len(json.dumps(outputs[i])) > limits.max_test_chars:
            raise BadRequest(f"tests.inputs[{i}]", f"longer than {limits.max_test_chars} "
                                                   "characters as JSON", 413)
    return TestSuite(kind="call", inputs=list(items), outputs=list(outputs)), name


def _check_assert(line: Any, where: str, limits: DebugLimits) -> str:
    if not isinstance(line, str):
        raise BadRequest(where, f"expected an assert line (string), got {type(line).__name__}")
    if len(line) > limits.max_test_chars:
        raise BadRequest(where, f"too long: {len(line)} characters, at most "
                                f"{limits.max_test_chars}", 413)
    line = line.strip()
    try:
        tree = ast.parse(line)
    except SyntaxError as e:
        raise BadRequest(where, f"not valid Python: {e.msg}") from None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        raise BadRequest(where, "expected a single `assert ...` statement")
    stmt = tree.body[0]
    if stmt.msg is not None and not (isinstance(stmt.msg, ast.Constant)
                                     and isinstance(stmt.msg.value, str)):
        raise BadRequest(where, "an assert message must be a string literal")
    for node in ast.walk(stmt.test):
        reason = _unsafe(node)
        if reason:
            raise BadRequest(where, f"{reason} (assert lines are limited to literals, "
                                    "comparisons and calls; see the API docs)")
    return line


def _unsafe(node: ast.AST) -> str:
    if not isinstance(node, _NODES):
        return f"{type(node).__name__} is not allowed in an assert line"
    if isinstance(node, ast.Attribute):
        ok = isinstance(node.value, ast.Name) and node.value.id == "math" \
            and node.attr == "isclose"
        return "" if ok else f"attribute access (.{node.attr}) is not allowed"
    if isinstance(node, ast.Name):
        if node.id.startswith("__"):
            return f"name {node.id} is not allowed"
        if node.id == "math":
            return ""
        if node.id in sys.stdlib_module_names:
            return f"module {node.id} is not allowed"
        if hasattr(builtins, node.id) and node.id not in _PURE_BUILTINS \
                and node.id not in ("True", "False", "None"):
            return f"builtin {node.id} is not allowed"
    if isinstance(node, ast.Constant) and isinstance(node.value, bytes | complex):
        return "bytes and complex literals are not allowed"
    if isinstance(node, ast.Call) and any(k.arg is None for k in node.keywords):
        return "**kwargs is not allowed"
    return ""
