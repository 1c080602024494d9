"""Per-task preparation, done once per task and shared by a pool's judges: the parsed
tests, the expected outputs of call suites, and the time limits."""

from __future__ import annotations

import ast
import builtins
import collections
import hashlib
import importlib
import json
import os
import sys
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from selfdebug.sandbox import wire
from selfdebug.sandbox.asserts import split_assert
from selfdebug.sandbox.compare import keeps_only_not_none
from selfdebug.schema import Problem


@dataclass
class Prepared:
    limit: float
    key: str = ""  # task_key: names the task's tests in the checker process
    # the sample's wall budget: max_seconds_per_sample, or timeout_factor x the reference's
    # own total time where that is longer (EvalPlus tasks with hundreds of heavy inputs)
    sample_seconds: float = 0.0
    # assert suites
    prelude: dict = field(default_factory=dict)
    compiled: list = field(default_factory=list)
    remote_names: tuple[str, ...] = ()
    batched: list = field(default_factory=list)  # SplitAssert for the leading statements
    batch_request: dict | None = None  # their calls as one call_many, sent with the code
    # call suites
    encoded_inputs: list = field(default_factory=list)
    expected: list | None = None
    # inputs without an expected value (the canonical solution raised, or returned what
    # the wire cannot carry): index -> why
    raised: dict = field(default_factory=dict)


def cache_root(config) -> Path:
    return Path(config.cache_dir or os.path.expanduser("~/.cache/selfdebug"))


def task_key(problem: Problem) -> str:
    """Everything that decides a task's expected outputs and limits (the question too:
    two problems that share a reference solution are still different tasks)."""
    t = problem.tests
    blob = json.dumps([problem.prompt, problem.entry_point, problem.source,
                       problem.canonical_solution, problem.completion_prefix,
                       problem.time_limit, t.kind, t.asserts, t.setup, t.prelude, t.atol,
                       t.base_count, repr(t.inputs), repr(t.outputs), sys.version],
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def prelude_code(problem: Problem):
    """The tests' trusted prelude. HumanEval-format preludes start with the prompt, which
    may be a bare signature (``def f(x):``, legal in that format): then the signature gets
    a body, or failing that the prompt is left out."""
    prelude, prompt = problem.tests.prelude, problem.prompt
    name = f"<tests of {problem.task_id}>"
    try:
        return compile(prelude, name, "exec")
    except SyntaxError:
        if not (prompt and prelude.startswith(prompt)):
            raise
    rest = prelude[len(prompt):]
    try:
        return compile(prompt.rstrip() + "\n    ...\n" + rest, name, "exec")
    except SyntaxError:
        return compile(rest, name, "exec")


def _names(tree: ast.AST) -> tuple[set[str], set[str]]:
    loaded, stored = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else stored).add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            stored.add(node.name)
        elif isinstance(node, ast.arg):
            stored.add(node.arg)
        elif isinstance(node, ast.alias):
            stored.add((node.asname or node.name).split(".")[0])
    return loaded, stored


class PreparedCache:
    """Per-task preparation shared by a pool's judges (threads), so each task calibrates
    once. An entry is published only when complete (expected outputs filled in); a judge
    that wants a task another is preparing waits for it. Known tasks are keyed by task_id;
    ad-hoc problems (a Serve request's own tests) by their content, in a bounded LRU."""

    ADHOC_ENTRIES = 256

    def __init__(self):
        self._done: dict = {}
        self._adhoc: collections.OrderedDict = collections.OrderedDict()
        self._locks: dict = {}
        self._lock = threading.Lock()

    def get_or_make(self, key, adhoc: bool, make):
        table = self._adhoc if adhoc else self._done
        with self._lock:
            if key in table:
                if adhoc:
                    table.move_to_end(key)
                return table[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one judge prepares; the others wait for the finished entry
            with self._lock:
                if key in table:
                    return table[key]
            prep = make()
            with self._lock:
                table[key] = prep
                self._locks.pop(key, None)
                while adhoc and len(table) > self.ADHOC_ENTRIES:
                    table.popitem(last=False)
            return prep


def prepare_asserts(problem: Problem, prep: Prepared) -> None:
    """Parse an assert suite: its trusted namespace, compiled statements, the names the
    program must provide, and the leading plain calls that go in as one batch."""
    t = problem.tests
    ns: dict = {"__name__": "__selfdebug_tests__", "__builtins__": builtins}
    if t.prelude:
        exec(prelude_code(problem), ns)
    loaded, stored = set(), set()
    for i, stmt in enumerate(t.asserts):
        with warnings.catch_warnings():  # benchmark tests with "\w" in plain strings
            warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
            tree = ast.parse(stmt)
        lo, st = _names(tree)
        loaded |= lo
        stored |= st
        prep.compiled.append(compile(tree, f"<test {i}>", "exec"))
    remote = []
    for name in sorted(loaded - stored):
        if name == "candidate" or name == problem.entry_point:
            continue
        if name in ns or hasattr(builtins, name):
            continue
        if name in sys.stdlib_module_names:
            ns[name] = importlib.import_module(name)
            continue
        remote.append(name)  # defined by the program or by the setup code
    ns.pop(problem.entry_point, None)  # the prompt's stub must not stand in for the code
    prep.prelude = ns
    prep.remote_names = tuple(remote)
    # The leading statements that are plain calls with literal arguments run as one
    # batch; the first that is not, and all after it, go through proxies (same order of
    # calls in the candidate either way).
    if not problem.entry_point:
        return
    callee = {"candidate", problem.entry_point}
    for i, stmt in enumerate(t.asserts):
        split = split_assert(stmt, callee, problem.entry_point, set(remote), set(ns), i)
        if split is None:
            break
        prep.batched.append(split)
    calls = [c for split in prep.batched for c in split.calls]
    if calls:
        prep.batch_request = {"op": "call_many", "target": ["N", problem.entry_point],
                              "inputs": [c[0] for c in calls],
                              "kwargs": [c[1] for c in calls]}


def fill_expected(problem: Problem, prep: Prepared, outputs: list | None) -> None:
    """Expected values from the reference's recorded outputs; an input without one (the
    reference raised, did not finish, or returned what is not plain data) is recorded
    with the reason, for a clear verdict on it."""
    prep.expected = []
    outputs = list(outputs or [])
    outputs += [["unfinished"]] * (len(problem.tests.inputs) - len(outputs))
    for i, e in enumerate(outputs):
        if e == ["unfinished"]:  # it timed out or died on this or an earlier input
            prep.raised[i] = "the reference solution did not finish this input"
            prep.expected.append(None)
            continue
        if e and e[0] == "raised":
            why = f" ({e[1]})" if len(e) > 1 else ""
            prep.raised[i] = f"the reference solution raised on this input{why}"
            prep.expected.append(None)
            continue
        if e and e[0] == "h" and keeps_only_not_none(problem.source, problem.entry_point):
            prep.expected.append(True)  # EvalPlus compares "is not None" only (re.Match ...)
            continue
        if e and e[0] == "h":  # an object handle: nothing to compare with
            prep.raised[i] = (f"the reference solution returned a {e[2]} object, "
                              "not plain data")
            prep.expected.append(None)
            continue
        try:
            prep.expected.append(wire.decode(e, trusted=True))
        except wire.WireError as err:  # e.g. the reference returned an object
            prep.raised[i] = f"the reference solution's output cannot be compared ({err})"
            prep.expected.append(None)
