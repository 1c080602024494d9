"""The trusted side: turn (problem, code) into an ExecResult using one fork server.

The sandbox gets code and inputs; expected values never leave this process. Assertion tests
that are plain calls with literal arguments (most of HumanEval and MBPP) go in with the
program as one batch of calls and are checked here on the returned plain values
(``asserts.py``); the others run here with ``RemoteRef`` proxies for the candidate's names.
Call tests send argument lists the same way; io tests send stdin and compare stdout.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import importlib
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

from selfdebug.sandbox import feedback as fb
from selfdebug.sandbox import wire
from selfdebug.sandbox.asserts import RESULTS, split_assert
from selfdebug.sandbox.compare import CallOracle, apps_equal, evalplus_dataset, stdout_equal
from selfdebug.sandbox.forkserver import ForkServer, ServerDied, detect_isolation
from selfdebug.sandbox.remote import RemoteException, RemoteRef, Session, SessionDead
from selfdebug.schema import ExecResult, Problem

# outcome of one test -> status of the sample when it is the first non-pass
_STATUS_OF = {"fail": "failed", "error": "error", "timeout": "timeout", "memory": "memory",
              "killed": "killed", "skipped": "failed"}


@dataclass
class SandboxConfig:
    isolation: str = "auto"  # auto | bwrap | degraded | none
    timeout_floor: float = 3.0  # seconds per test, at least
    timeout_factor: float = 4.0  # x the canonical solution's slowest test (EvalPlus uses 4)
    calibrate: bool = True  # derive per-task limits from the canonical solution's runtime
    max_seconds_per_sample: float = 60.0
    memory_mb: int = 2048
    output_cap_bytes: int = 1 << 20
    tmpfs_mb: int = 256
    stop_on_first_failure: bool = False
    feedback_chars: int = 1500
    cache_dir: str = ""  # expected outputs and limits; default ~/.cache/selfdebug

    def limits(self, seconds: float) -> dict:
        return {"as_bytes": self.memory_mb << 20, "cpu_s": int(seconds) + 2,
                "fsize": self.output_cap_bytes * 4, "nofile": 64}


@dataclass
class _Prepared:
    limit: float
    # assert suites
    prelude: dict = field(default_factory=dict)
    compiled: list = field(default_factory=list)
    remote_names: tuple[str, ...] = ()
    batched: list = field(default_factory=list)  # SplitAssert for the leading statements
    batch_request: dict | None = None  # their calls as one call_many, sent with the code
    # call suites
    encoded_inputs: list = field(default_factory=list)
    expected: list | None = None
    raised: set = field(default_factory=set)  # inputs on which the canonical solution raised


def _cache_root(config: SandboxConfig) -> Path:
    return Path(config.cache_dir or os.path.expanduser("~/.cache/selfdebug"))


def _task_key(problem: Problem) -> str:
    t = problem.tests
    blob = json.dumps([problem.canonical_solution, t.kind, t.asserts, t.setup, t.prelude,
                       repr(t.inputs)[:10_000_000], sys.version], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


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


class Judge:
    """Judges candidates for a set of problems with one fork server (one at a time)."""

    def __init__(self, problems, config: SandboxConfig | None = None,
                 server: ForkServer | None = None, prepared: dict | None = None):
        self.config = config or SandboxConfig()
        self.problems: dict[str, Problem] = (
            dict(problems) if isinstance(problems, dict) else {p.task_id: p for p in problems})
        self.server = server or ForkServer(detect_isolation(self.config.isolation),
                                           self.config.tmpfs_mb << 20)
        # per-task preparation; a pool's judges share one, so each task calibrates once
        self._prepared: dict[str, _Prepared] = {} if prepared is None else prepared

    @property
    def isolation(self) -> str:
        return self.server.isolation.level

    def close(self) -> None:
        self.server.close()

    # ------------------------------------------------------------------ public
    def run(self, task_id: str, code: str) -> ExecResult:
        problem = self.problems.get(task_id)
        if problem is None:
            return ExecResult("error", 0, 0, [], f"unknown task_id {task_id!r}", 0.0,
                              self.isolation)
        prep = self.prepare(problem)
        t0 = time.monotonic()
        kind = problem.tests.kind
        if kind == "assert":
            outcomes, notes = self._run_asserts(problem, prep, code)
        elif kind == "call":
            outcomes, notes = self._run_calls(problem, prep, code)
        else:
            outcomes, notes = self._run_io(problem, prep, code)
        return self._result(outcomes, notes, time.monotonic() - t0)

    def prepare(self, problem: Problem) -> _Prepared:
        """Per-task work done once: parse tests, expected outputs, time limit."""
        prep = self._prepared.get(problem.task_id)
        if prep is not None:
            return prep
        limit = problem.time_limit or self.config.timeout_floor
        prep = _Prepared(limit=limit)
        t = problem.tests
        if t.kind == "assert":
            self._prepare_asserts(problem, prep)
        elif t.kind == "call":
            prep.encoded_inputs = [[wire.encode(a) for a in inp] for inp in t.inputs]
            prep.expected = list(t.outputs) if t.outputs is not None else None
        self._prepared[problem.task_id] = prep
        needs_expected = t.kind == "call" and prep.expected is None
        if needs_expected or (self.config.calibrate and problem.time_limit is None):
            self._calibrate(problem, prep)
        return prep

    # ------------------------------------------------------------------ preparation
    def _prepare_asserts(self, problem: Problem, prep: _Prepared) -> None:
        t = problem.tests
        ns: dict = {"__name__": "__selfdebug_tests__", "__builtins__": builtins}
        if t.prelude:
            exec(compile(t.prelude, f"<tests of {problem.task_id}>", "exec"), ns)
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

    def _calibrate(self, problem: Problem, prep: _Prepared) -> None:
        """Run the canonical solution once: expected outputs (call suites) and time limit."""
        cache = _cache_root(self.config) / "tasks" / f"{_task_key(problem)}.json"
        cached = None
        if cache.is_file():
            try:
                cached = json.loads(cache.read_text())
            except ValueError:
                cached = None
        if cached is None:
            prep.limit = self.config.max_seconds_per_sample  # generous for the reference
            times: list[float] = []
            outcomes, notes = (self._run_calls(problem, prep, problem.canonical_solution,
                                               times=times, collect=True)
                               if problem.tests.kind == "call" else
                               self._dispatch(problem, prep, problem.canonical_solution, times))
            cached = {"max_test_seconds": max(times, default=0.0),
                      "canonical_passed": all(o == "pass" for o in outcomes),
                      "canonical_feedback": notes.get("first", "")}
            if problem.tests.kind == "call":
                cached["expected"] = notes.get("outputs")
            cache.parent.mkdir(parents=True, exist_ok=True)
            # unique temp name: several judges (threads, actors) may calibrate one task
            fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(cached))
            os.replace(tmp, cache)
        if problem.tests.kind == "call" and prep.expected is None:
            prep.raised = {i for i, e in enumerate(cached["expected"]) if e == ["raised"]}
            prep.expected = [None if i in prep.raised else wire.decode(e)
                             for i, e in enumerate(cached["expected"])]
        if problem.time_limit is not None:
            prep.limit = problem.time_limit
        elif self.config.calibrate:
            prep.limit = max(self.config.timeout_floor,
                             self.config.timeout_factor * cached["max_test_seconds"])
        else:
            prep.limit = self.config.timeout_floor

    def _dispatch(self, problem, prep, code, times):
        if problem.tests.kind == "assert":
            return self._run_asserts(problem, prep, code, times)
        return self._run_io(problem, prep, code, times)

    # ------------------------------------------------------------------ strategies
    def _deadline(self, n_tests: int, limit: float) -> float:
        budget = min(self.config.max_seconds_per_sample, limit * (n_tests + 1))
        return time.monotonic() + budget

    def _run_asserts(self, problem, prep, code, times=None):
        t = problem.tests
        n = len(t.asserts)
        session = Session(self.server, code, t.setup, self.config.limits(prep.limit * (n + 1)),
                          prep.limit, self._deadline(n, prep.limit))
        ep = problem.entry_point
        then = prep.batch_request
        load = session.start(prep.limit, then)
        if "loaded" not in load:
            return self._load_failure(load, n, prep.limit)
        ns = dict(prep.prelude)
        for name in prep.remote_names:
            ns[name] = RemoteRef(session, ["N", name], name)
        if ep:
            ns["candidate"] = ns[ep] = RemoteRef(session, ["N", ep], ep)
        outcomes: list[str] = []
        notes: dict = {}
        try:
            if then is not None:
                replies = list(self.server.read_stream(len(then["inputs"]), prep.limit,
                                                       first=load))
                if not self._check_batched(prep, session, ns, replies, t, ep, outcomes, notes,
                                           times):
                    return outcomes + ["skipped"] * (n - len(outcomes)), notes
            for i in range(len(outcomes), n):
                compiled = prep.compiled[i]
                if outcomes and outcomes[-1] != "pass" and self.config.stop_on_first_failure:
                    break
                session.last_call = None
                t0 = time.monotonic()
                outcome, note = self._exec_statement(compiled, ns, session, t.asserts[i], ep,
                                                     prep.limit)
                if times is not None:
                    times.append(time.monotonic() - t0)
                outcomes.append(outcome)
                if outcome != "pass" and "first" not in notes:
                    notes["first"] = note
                if outcome in ("timeout", "memory", "killed") and note.endswith("[dead]"):
                    notes["first"] = notes["first"].removesuffix(" [dead]")
                    if outcome == "timeout":
                        break  # every later test would wait for the same limit
                    if "loaded" not in session.start(prep.limit):
                        break
        finally:
            session.end()
        outcomes += ["skipped"] * (n - len(outcomes))
        return outcomes, notes

    def _check_batched(self, prep, session, ns, replies, t, ep, outcomes, notes, times) -> bool:
        """Verdicts of the batched statements from their calls' results. False: stop here
        (a timeout); True: go on with the remaining statements (after restarting a session
        that died otherwise)."""
        k = 0
        for i, split in enumerate(prep.batched):
            if outcomes and outcomes[-1] != "pass" and self.config.stop_on_first_failure:
                return False
            got = replies[k:k + len(split.calls)]
            k += len(split.calls)
            if times is not None:
                times.append(sum(seconds for _, seconds in got))
            dead = next((r["dead"] for r, _ in got if "dead" in r), None)
            if dead is not None or len(got) < len(split.calls):
                info = dead or {"kind": "dead", "detail": "no result"}
                outcome = "timeout" if info.get("kind") == "timeout" or \
                    info.get("signal") == 24 else "killed"
                outcomes.append(outcome)
                notes.setdefault("first", f"`{fb.statement_text(t.asserts[i], ep)}`: "
                                          f"{fb.describe_death(info, prep.limit)}")
                return outcome != "timeout" and "loaded" in session.start(prep.limit)
            resps = [r["resp"] for r, _ in got]
            exc = next((r["exc"] for r in resps if "exc" in r), None)
            if exc is not None:
                outcomes.append("memory" if exc.get("type") == "MemoryError" else "error")
                notes.setdefault("first", f"`{fb.statement_text(t.asserts[i], ep)}` raised "
                                          f"{fb.describe_exception(exc)}")
                continue
            values = [wire.decode(r["ok"], lambda d, lb=label: RemoteRef(session, d, lb))
                      for r, label in zip(resps, split.labels)]
            session.last_call = (split.labels[-1], values[-1]) if values else None
            ns[RESULTS] = values
            outcome, note = self._exec_statement(split.check, ns, session, t.asserts[i], ep,
                                                 prep.limit)
            outcomes.append(outcome)
            if outcome != "pass":
                notes.setdefault("first", note.removesuffix(" [dead]"))
                if outcome in ("timeout", "memory", "killed") and note.endswith("[dead]"):
                    # a proxy (handle) request of the check killed the session
                    return outcome != "timeout" and "loaded" in session.start(prep.limit)
        return True

    def _exec_statement(self, compiled, ns, session, stmt, ep, limit):
        def text():  # rendered only for a failure's feedback
            return fb.statement_text(stmt, ep)

        try:
            exec(compiled, ns)
            return "pass", ""
        except ServerDied:
            raise  # not the candidate's doing: the pool restarts the server and retries
        except SessionDead as d:
            kind = d.info.get("kind")
            outcome = "timeout" if kind == "timeout" or d.info.get("signal") == 24 else "killed"
            return outcome, f"`{text()}`: {fb.describe_death(d.info, limit)} [dead]"
        except RemoteException as e:
            info = e.info
            outcome = "memory" if info.get("type") == "MemoryError" else "error"
            return outcome, f"`{text()}` raised {fb.describe_exception(info)}"
        except AssertionError:
            last = session.last_call
            if last is None:
                return "fail", f"`{text()}` failed"
            return "fail", f"`{text()}` failed: {last[0]} returned {fb.show(last[1])}"
        except Exception as e:  # noqa: BLE001
            # The test code choked on what the candidate returned (None - 1.0, ...): a wrong
            # value, not an exception in the candidate.
            last = session.last_call
            got = f" ({last[0]} returned {fb.show(last[1])})" if last else ""
            return "fail", f"`{text()}` failed with {type(e).__name__}: {fb.clip(e, 200)}{got}"

    def _run_calls(self, problem, prep, code, times=None, collect=False):
        t = problem.tests
        n = len(prep.encoded_inputs)
        session = Session(self.server, code, "", self.config.limits(prep.limit * (n + 1)),
                          prep.limit, self._deadline(n, prep.limit))
        ep = problem.entry_point
        req = {"op": "call_many", "target": ["N", ep], "inputs": prep.encoded_inputs}
        load = session.start(prep.limit, then=req if n else None)
        if "loaded" not in load:
            return self._load_failure(load, n, prep.limit)
        outcomes: list[str] = []
        notes: dict = {"outputs": []} if collect else {}
        # EvalPlus' per-input checks, special oracles included (compare.py)
        oracle = CallOracle(t.atol, evalplus_dataset=evalplus_dataset(problem.source),
                            entry_point=ep, base_count=t.base_count)
        try:
            replies = self.server.read_stream(n, prep.limit, first=load)
            for i, (reply, seconds) in enumerate(replies):
                if times is not None:
                    times.append(seconds)
                def call(i=i):  # rendered only for the feedback of a failure
                    return f"{ep}({fb.clip(', '.join(fb.show(a, 80) for a in t.inputs[i]), 240)})"

                if "dead" in reply:
                    info = reply["dead"]
                    outcome = "timeout" if info.get("kind") == "timeout" else "killed"
                    outcomes.append(outcome)
                    notes.setdefault("first", f"`{call()}`: {fb.describe_death(info, prep.limit)}")
                    break
                resp = reply["resp"]
                if collect:  # a canonical solution that raises gives no expected value
                    notes["outputs"].append(resp.get("ok", ["raised"]))
                if "exc" in resp:
                    outcome = "memory" if resp["exc"].get("type") == "MemoryError" else "error"
                    outcomes.append(outcome)
                    notes.setdefault("first", f"`{call()}` raised "
                                              f"{fb.describe_exception(resp['exc'])}")
                    continue
                if collect:
                    outcomes.append("pass")
                    continue
                got = wire.decode(resp["ok"], lambda d: RemoteRef(session, d, call()))
                ok = self._call_ok(problem, prep, i, got, oracle)
                outcomes.append("pass" if ok else "fail")
                if not ok:
                    notes.setdefault("first", f"`{call()}` returned {fb.show(got)}, expected "
                                              f"{fb.show(prep.expected[i])}")
        finally:
            session.end()
        outcomes += ["skipped"] * (n - len(outcomes))
        return outcomes, notes

    def _call_ok(self, problem, prep, i, got, oracle: CallOracle) -> bool:
        if i in prep.raised:
            return False  # the canonical solution raised on this input: no verdict possible
        expected = prep.expected[i]
        if problem.source == "apps":
            return apps_equal(got, expected)
        return oracle.check(i, got, expected, problem.tests.inputs[i])

    def _run_io(self, problem, prep, code, times=None):
        t = problem.tests
        outcomes: list[str] = []
        notes: dict = {}
        deadline = self._deadline(len(t.inputs), prep.limit)
        for i, stdin in enumerate(t.inputs):
            if outcomes and outcomes[-1] != "pass" and self.config.stop_on_first_failure:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            limit = min(prep.limit, left)
            r = self.server.request({"op": "io", "code": code, "stdin": stdin,
                                     "limits": self.config.limits(limit), "timeout": limit,
                                     "output_cap": self.config.output_cap_bytes}, limit)
            if times is not None:
                times.append(r["time"])
            outcome, note = self._io_outcome(r, stdin, t.outputs[i] if t.outputs else "", limit)
            outcomes.append(outcome)
            if outcome != "pass":
                notes.setdefault("first", note)
                if outcome == "timeout":
                    break
        outcomes += ["skipped"] * (len(t.inputs) - len(outcomes))
        return outcomes, notes

    @staticmethod
    def _io_outcome(r: dict, stdin: str, expected: str, limit: float) -> tuple[str, str]:
        if r["timeout"]:
            return "timeout", f"Input:\n{fb.clip(stdin, 300)}\nTimed out after {limit:g} s"
        if r["error"]:
            kind = "memory" if r["error"].get("type") == "MemoryError" else "error"
            return kind, (f"Input:\n{fb.clip(stdin, 300)}\n"
                          f"{fb.describe_exception(r['error'])}")
        if r["signal"] is not None:
            death = {"kind": "signal", "signal": r["signal"]}
            outcome = "timeout" if r["signal"] == 24 else "killed"
            return outcome, f"Input:\n{fb.clip(stdin, 300)}\n{fb.describe_death(death, limit)}"
        if r["exit"] not in (0, None):
            return "error", f"Input:\n{fb.clip(stdin, 300)}\nExited with code {r['exit']}"
        if r["truncated"]:
            return "fail", f"Input:\n{fb.clip(stdin, 300)}\nOutput exceeded the size limit"
        if stdout_equal(r["stdout"], expected):
            return "pass", ""
        return "fail", fb.io_failure(stdin, expected, r["stdout"])

    # ------------------------------------------------------------------ results
    def _load_failure(self, reply: dict, n: int, limit: float):
        if "load_error" in reply:
            info = reply["load_error"]
            outcome = "memory" if info.get("type") == "MemoryError" else "error"
            note = fb.describe_exception(info)
        else:
            info = reply.get("dead", {})
            outcome = "timeout" if info.get("kind") == "timeout" else "killed"
            note = f"Loading the program: {fb.describe_death(info, limit)}"
        return [outcome] + ["skipped"] * (n - 1) if n else [outcome], {"first": note}

    def _result(self, outcomes: list[str], notes: dict, runtime: float) -> ExecResult:
        passed = sum(o == "pass" for o in outcomes)
        total = len(outcomes)
        first_bad = next((o for o in outcomes if o != "pass"), None)
        status = "passed" if first_bad is None and total else _STATUS_OF.get(first_bad, "error")
        text = ""
        if status != "passed":
            text = fb.clip(notes.get("first", "") + "\n" + fb.summary_line(passed, total),
                           self.config.feedback_chars)
        return ExecResult(status, passed, total, outcomes, text.strip(), runtime, self.isolation)


def with_config(config: SandboxConfig | None, **changes) -> SandboxConfig:
    return replace(config or SandboxConfig(), **changes)
