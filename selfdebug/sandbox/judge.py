"""The trusted side: turn (problem, code) into an ExecResult using one fork server.

The sandbox gets code and inputs; expected values never reach it. Assertion tests that are
plain calls with literal arguments (most of HumanEval and MBPP) go in with the program as
one batch of calls, and their checks run on the returned plain values (``asserts.py``); the
others run with ``RemoteRef`` proxies for the candidate's names. Either way the test code
runs in the checker process (``checker.py``), bounded in time and memory, never in this
one. Call tests send argument lists the same way and are compared here (``compare.py``:
work linear in the wire-capped values); io tests send stdin and compare stdout.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field

from selfdebug.sandbox import fastpath, wire
from selfdebug.sandbox import feedback as fb
from selfdebug.sandbox.checker import Checker
from selfdebug.sandbox.compare import CallOracle, apps_equal, evalplus_dataset, stdout_equal
from selfdebug.sandbox.forkserver import ForkServer, ServerDied
from selfdebug.sandbox.isolation import detect_isolation
from selfdebug.sandbox.prepare import (
    Prepared,
    PreparedCache,
    cache_root,
    fill_expected,
    prepare_asserts,
    task_key,
)
from selfdebug.sandbox.remote import RemoteException, RemoteRef, Session, decode_result
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
    # Packages (besides the standard library) that candidates may import; the sandbox's
    # filesystem view holds nothing else of the installation.
    packages: list[str] = field(default_factory=lambda: ["numpy"])

    def limits(self, seconds: float) -> dict:
        return {"as_bytes": self.memory_mb << 20, "cpu_s": int(seconds) + 2,
                "fsize": self.output_cap_bytes * 4, "nofile": 64}


def make_server(config: SandboxConfig, isolation=None) -> ForkServer:
    return ForkServer(isolation or detect_isolation(config.isolation), config.tmpfs_mb << 20,
                      tuple(config.packages))


class Judge:
    """Judges candidates for a set of problems with one fork server (one at a time)."""

    def __init__(self, problems, config: SandboxConfig | None = None,
                 server: ForkServer | None = None, prepared: PreparedCache | None = None):
        self.config = config or SandboxConfig()
        problems = problems or {}
        self.problems: dict[str, Problem] = (
            dict(problems) if isinstance(problems, dict) else {p.task_id: p for p in problems})
        self.server = server or make_server(self.config)
        self.checker = Checker(self.config.memory_mb)  # runs the tests' own code
        self._prepared = prepared if prepared is not None else PreparedCache()

    @property
    def isolation(self) -> str:
        return self.server.isolation.level

    def close(self) -> None:
        self.server.close()
        self.checker.close()

    # ------------------------------------------------------------------ public
    def run(self, task_id: str, code: str) -> ExecResult:
        problem = self.problems.get(task_id)
        if problem is None:
            return ExecResult("error", 0, 0, [], f"unknown task_id {task_id!r}", 0.0,
                              self.isolation)
        return self.run_problem(problem, code)

    def run_problem(self, problem: Problem, code: str) -> ExecResult:
        """Judge ``code`` against ``problem``, known to this judge or ad hoc."""
        try:
            prep = self.prepare(problem)
        except ServerDied:
            raise
        except Exception as e:  # noqa: BLE001  the benchmark's own test code is broken
            return ExecResult("error", 0, len(problem.tests), [], fb.clip(
                f"cannot prepare the tests of {problem.task_id}: {type(e).__name__}: {e}",
                self.config.feedback_chars), 0.0, self.isolation)
        t0 = time.monotonic()
        kind = problem.tests.kind
        if kind == "assert":
            outcomes, notes = self._run_asserts(problem, prep, code)
        elif kind == "call":
            outcomes, notes = self._run_calls(problem, prep, code)
        else:
            outcomes, notes = self._run_io(problem, prep, code)
        return self._result(outcomes, notes, time.monotonic() - t0)

    def prepare(self, problem: Problem) -> Prepared:
        """Per-task work done once: parse tests, expected outputs, time limit."""
        known = self.problems.get(problem.task_id) is problem
        key = problem.task_id if known else task_key(problem)
        return self._prepared.get_or_make(key, not known, lambda: self._prepare(problem))

    def _prepare(self, problem: Problem) -> Prepared:
        limit = problem.time_limit or self.config.timeout_floor
        prep = Prepared(limit=limit, key=task_key(problem))
        t = problem.tests
        if t.kind == "assert":
            prepare_asserts(problem, prep)
        elif t.kind == "call":
            prep.encoded_inputs = [[wire.encode(a) for a in inp] for inp in t.inputs]
            prep.expected = list(t.outputs) if t.outputs is not None else None
        needs_expected = t.kind == "call" and prep.expected is None
        if needs_expected or (self.config.calibrate and problem.time_limit is None):
            self._calibrate(problem, prep)
        return prep

    # ------------------------------------------------------------------ preparation
    def _calibrate(self, problem: Problem, prep: Prepared) -> None:
        """Run the canonical solution once: expected outputs (call suites) and time limit."""
        cache = cache_root(self.config) / "tasks" / f"{task_key(problem)}.json"
        cached = None
        if cache.is_file():
            try:
                cached = json.loads(cache.read_text())
            except ValueError:
                cached = None
        if cached is None:
            prep.limit = self.config.max_seconds_per_sample  # generous for the reference
            n = len(problem.tests)
            prep.sample_seconds = prep.limit * (n + 1)
            times: list[float] = []
            outcomes, notes = (self._run_calls(problem, prep, problem.canonical_solution,
                                               times=times, collect=True)
                               if problem.tests.kind == "call" else
                               self._dispatch(problem, prep, problem.canonical_solution, times))
            cached = {"max_test_seconds": max(times, default=0.0),
                      "total_test_seconds": sum(times),
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
            fill_expected(problem, prep, cached["expected"])
        prep.sample_seconds = self.config.timeout_factor * cached.get("total_test_seconds", 0.0)
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
    def _deadline(self, n_tests: int, limit: float, prep_seconds: float = 0.0
                  ) -> tuple[float, float]:
        """(the sample's budget for its tests, its hard wall deadline: nothing waits past
        it, owed CPU time included)."""
        now = time.monotonic()
        cap = max(self.config.max_seconds_per_sample, prep_seconds)
        return now + min(cap, limit * (n_tests + 1)), now + cap

    def _run_asserts(self, problem, prep, code, times=None):
        t = problem.tests
        n = len(t.asserts)
        session = Session(self.server, code, t.setup, self.config.limits(prep.limit * (n + 1)),
                          prep.limit, *self._deadline(n, prep.limit, prep.sample_seconds))
        then = prep.batch_request
        load = session.start(prep.limit, then)
        if "loaded" not in load:
            return self._load_failure(load, n, prep.limit)
        # the tests run in the checker process (checker.py), never here
        self.checker.begin(prep.key or task_key(problem), problem, prep.limit)
        check_limit = max(prep.limit, 1.0)
        outcomes: list[str] = []
        notes: dict = {}
        try:
            if then is not None:
                replies = list(session.results(len(then["inputs"]), prep.limit))
                if not self._check_batched(prep, session, replies, t, outcomes, notes, times):
                    return outcomes + ["skipped"] * (n - len(outcomes)), notes
            for i in range(len(outcomes), n):
                if outcomes and outcomes[-1] != "pass" and self.config.stop_on_first_failure:
                    break
                t0 = time.monotonic()
                outcome, note = self.checker.statement(i, session, check_limit,
                                                       session.hard_deadline)
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

    def _check_batched(self, prep, session, replies, t, outcomes, notes, times) -> bool:
        """Verdicts of the batched statements from their calls' results: decided here when
        bounded by construction (``fastpath.py``), else by the checker process (all of
        those in one conversation). False: stop here (a timeout, or stop_on_first_failure);
        True: go on with the remaining statements (after restarting a session that died)."""
        ep = prep.batch_request["target"][1]
        stop_first = self.config.stop_on_first_failure
        k = 0
        items, dead_at = [], None
        decided: dict[int, tuple[str, str]] = {}  # index -> (outcome, note) from the fast path
        for i, split in enumerate(prep.batched):
            got = replies[k:k + len(split.calls)]
            k += len(split.calls)
            if times is not None:
                times.append(sum(seconds for _, seconds in got))
            dead = next((r["dead"] for r, _ in got if "dead" in r), None)
            if dead is not None or len(got) < len(split.calls):
                dead_at = (i, dead or {"kind": "dead", "detail": "no result"})
                break
            resps = [r["resp"] for r, _ in got]
            fast = fastpath.verdict(split, resps, split.labels, t.asserts[i], ep)
            items.append((i, resps, split.labels))
            if fast is not None:
                decided[i] = fast
                if stop_first and fast[0] != "pass":
                    break  # the statements after it are never checked
        checked = self._checker_verdicts([it for it in items if it[0] not in decided],
                                         session, prep)
        for i, _, _ in items:
            outcome, note = decided[i] if i in decided else checked.get(i, (None, ""))
            if outcome is None:
                return False  # the checker gave up on the sample's time: the rest skipped
            outcomes.append(outcome)
            if outcome == "pass":
                continue
            notes.setdefault("first", note.removesuffix(" [dead]"))
            if outcome in ("timeout", "memory", "killed") and note.endswith("[dead]"):
                # a proxy (handle) request of the check killed the session
                return outcome != "timeout" and "loaded" in session.start(prep.limit)
            if stop_first:
                return False
        if dead_at is not None:
            i, info = dead_at
            outcome = fb.death_outcome(info)
            outcomes.append(outcome)
            notes.setdefault("first", f"`{fb.statement_text(t.asserts[i], ep)}`: "
                                      f"{fb.describe_death(info, prep.limit)}")
            return outcome != "timeout" and "loaded" in session.start(prep.limit)
        return True

    def _checker_verdicts(self, items, session, prep) -> dict[int, tuple[str, str]]:
        """The checker's ``(outcome, note)`` per statement index of ``items``. It stops at
        the first failure (stop_on_first_failure), a check that killed the session (note
        ending in " [dead]") and on running out of the sample's time: the statements after
        are missing."""
        stop_first = self.config.stop_on_first_failure
        check_limit = max(prep.limit, 1.0)
        verdicts: dict[int, tuple[str, str]] = {}
        while items:
            done, stop = 0, False
            # read to the batch's end even after a stop: the checker stops there by itself
            # and its closing frame must not be left for the next conversation to read
            for i, outcome, note in self.checker.batch(items, session, check_limit,
                                                       session.hard_deadline, stop_first):
                done += 1
                verdicts[i] = (outcome, note)
                stop = stop or (outcome != "pass" and (stop_first or note.endswith("[dead]")))
            if stop:
                return verdicts
            items = items[done:]
            if items and (done == 0 or time.monotonic() >= session.hard_deadline):
                return verdicts
        return verdicts

    def _run_calls(self, problem, prep, code, times=None, collect=False):
        t = problem.tests
        n = len(prep.encoded_inputs)
        session = Session(self.server, code, "", self.config.limits(prep.limit * (n + 1)),
                          prep.limit, *self._deadline(n, prep.limit, prep.sample_seconds))
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
            replies = session.results(n, prep.limit)
            for i, (reply, seconds) in enumerate(replies):
                if times is not None:
                    times.append(seconds)
                def call(i=i):  # rendered only for the feedback of a failure
                    return f"{ep}({fb.clip(', '.join(fb.show(a, 80) for a in t.inputs[i]), 240)})"

                if "dead" in reply:
                    info = reply["dead"]
                    outcome = fb.death_outcome(info)
                    outcomes.append(outcome)
                    notes.setdefault("first", f"`{call()}`: {fb.describe_death(info, prep.limit)}")
                    break
                resp = reply["resp"]
                if collect:  # a canonical solution that raises gives no expected value
                    exc = resp.get("exc") if isinstance(resp.get("exc"), dict) else {}
                    notes["outputs"].append(resp["ok"] if "ok" in resp else [
                        "raised", fb.clip(f"{exc.get('type', 'Error')}: {exc.get('msg', '')}", 200)])
                if "exc" in resp:
                    outcome = "memory" if resp["exc"].get("type") == "MemoryError" else "error"
                    outcomes.append(outcome)
                    notes.setdefault("first", f"`{call()}` raised "
                                              f"{fb.describe_exception(resp['exc'])}")
                    continue
                if collect:
                    outcomes.append("pass")
                    continue
                try:
                    got = decode_result(resp.get("ok"), lambda d: RemoteRef(session, d, call()))
                except RemoteException as e:  # a value the wire cannot carry back
                    outcomes.append("error")
                    notes.setdefault("first", f"`{call()}` raised "
                                              f"{fb.describe_exception(e.info)}")
                    continue
                if i in prep.raised:  # no expected value to compare with: never a pass
                    outcomes.append("fail")
                    notes.setdefault("first", f"`{call()}`: no verdict possible: "
                                              f"{prep.raised[i]}")
                    continue
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
        expected = prep.expected[i]
        if problem.source == "apps":
            return apps_equal(got, expected)
        return oracle.check(i, got, expected, problem.tests.inputs[i])

    def _run_io(self, problem, prep, code, times=None):
        t = problem.tests
        outcomes: list[str] = []
        notes: dict = {}
        deadline, hard = self._deadline(len(t.inputs), prep.limit, prep.sample_seconds)
        for i, stdin in enumerate(t.inputs):
            if outcomes and outcomes[-1] != "pass" and self.config.stop_on_first_failure:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            limit = min(prep.limit, left)
            r = self._io_once(code, stdin, limit, hard)
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

    def _io_once(self, code: str, stdin: str, limit: float, hard: float) -> dict:
        """Run the program once, in a fresh worker, on one stdin."""
        worker = self.server.spawn("io", {"code": code, "stdin": stdin,
                                          "limits": self.config.limits(limit)}, io_stdout=True)
        t0 = time.monotonic()
        clock = worker.clock(limit, hard)
        try:
            # the worker's result channel is its fd 2: an error report, then end of file
            timed_out, report = worker.read_to_end(clock)
            elapsed = time.monotonic() - t0
            status = worker.end(grace=0.0 if timed_out else max(0.0, min(clock.left(), 5.0)),
                                wait=True) or {}
            stdout, truncated = worker.take_output(self.config.output_cap_bytes)
        finally:
            worker.end()
            if worker.out_fd >= 0:
                os.close(worker.out_fd)
        try:
            error = json.loads(report) if report else None
        except (ValueError, RecursionError):
            error = None
        return {"stdout": stdout, "truncated": truncated,
                "exit": None if timed_out else status.get("exit"),
                "signal": None if timed_out else status.get("signal"),
                "timeout": timed_out, "error": error if isinstance(error, dict) else None,
                "time": elapsed}

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
            outcome = fb.death_outcome(death)
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
            outcome = fb.death_outcome(info)
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

