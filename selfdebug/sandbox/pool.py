"""Several fork servers behind one call: judge many rows in parallel, in one process."""

from __future__ import annotations

import logging
import queue
from concurrent.futures import ThreadPoolExecutor

from selfdebug.sandbox.forkserver import ServerDied
from selfdebug.sandbox.isolation import detect_isolation
from selfdebug.sandbox.judge import Judge, PreparedCache, SandboxConfig, make_server
from selfdebug.schema import ExecResult, Problem

log = logging.getLogger(__name__)

# The verdict keys a judged row gains (ExecResult's fields but the isolation level, which
# the pool reports once).
VERDICT_KEYS = ("status", "passed", "total", "feedback", "runtime", "outcomes")


def error_verdict(reason: str) -> dict:
    """A row that could not be judged: an ``error`` verdict naming why."""
    return {"status": "error", "passed": 0, "total": 0, "feedback": reason, "runtime": 0.0,
            "outcomes": []}


def verdict_row(row: dict, verdict: dict) -> dict:
    """The input row's keys (minus code and an ad-hoc problem) plus the verdict."""
    out = {k: v for k, v in row.items() if k not in ("code", "problem")}
    if "task_id" not in out and isinstance(row.get("problem"), Problem):
        out["task_id"] = row["problem"].task_id
    out.update({k: verdict[k] for k in VERDICT_KEYS})
    return out


class SandboxPool:
    """``workers`` judges, each with its own fork server; rows are spread over them.

    A crashed fork server is restarted and its row retried once; a row that crashes it again
    is reported as ``killed``, never dropped. ``problems`` may be empty when every row
    brings its own problem (``judge_rows``).
    """

    def __init__(self, problems=None, config: SandboxConfig | None = None, workers: int = 1):
        self.config = config or SandboxConfig()
        iso = detect_isolation(self.config.isolation)
        problems = problems or {}
        problems = problems if isinstance(problems, dict) else {p.task_id: p for p in problems}
        prepared = PreparedCache()
        self.judges = [Judge(problems, self.config, make_server(self.config, iso), prepared)
                       for _ in range(max(1, workers))]
        self._free: queue.Queue[Judge] = queue.Queue()
        for j in self.judges:
            self._free.put(j)
        self._threads = ThreadPoolExecutor(len(self.judges))
        self.restarts = 0

    @property
    def isolation(self) -> str:
        return self.judges[0].isolation

    def run(self, task_id: str, code: str) -> ExecResult:
        return self._judged(lambda judge: judge.run(task_id, code), task_id)

    def run_problem(self, problem: Problem, code: str) -> ExecResult:
        return self._judged(lambda judge: judge.run_problem(problem, code), problem.task_id)

    def _judged(self, job, task_id: str) -> ExecResult:
        judge = self._free.get()
        try:
            for attempt in (1, 2):
                try:
                    return job(judge)
                except ServerDied as e:
                    self.restarts += 1
                    judge.server.close()  # the next request starts a fresh one
                    if attempt == 2:
                        return ExecResult("killed", 0, 0, [], f"sandbox crashed twice: {e}",
                                          0.0, judge.isolation)
                except Exception as e:  # noqa: BLE001  a bug of ours must not lose the batch
                    log.exception("judging %s failed", task_id)
                    judge.server.close()
                    return ExecResult("error", 0, 0, [], f"selfdebug internal error while "
                                      f"judging: {type(e).__name__}: {e}", 0.0, judge.isolation)
            raise AssertionError("unreachable")
        finally:
            self._free.put(judge)

    def run_many(self, rows: list[tuple[str, str]]) -> list[ExecResult]:
        return list(self._threads.map(lambda r: self.run(*r), rows))

    def judge_row(self, row: dict) -> dict:
        """One row: ``{"task_id", "code", ...}`` (a task this pool knows) or ``{"problem":
        Problem, "code", ...}`` (ad hoc). Returns the row's keys (minus code and problem)
        plus the verdict; a malformed row gets an ``error`` verdict naming what is wrong."""
        code, problem = row.get("code"), row.get("problem")
        if not isinstance(code, str):
            return verdict_row(row, error_verdict(
                f"row has no 'code' string (got {type(code).__name__})"))
        if problem is not None:
            if not isinstance(problem, Problem):
                return verdict_row(row, error_verdict(
                    f"row's 'problem' is a {type(problem).__name__}, not a Problem"))
            result = self.run_problem(problem, code)
        elif isinstance(row.get("task_id"), str):
            result = self.run(row["task_id"], code)
        else:
            return verdict_row(row, error_verdict("row has neither 'problem' nor a "
                                                  "'task_id' string"))
        return verdict_row(row, result.to_dict())

    def judge_rows(self, rows: list[dict]) -> list[dict]:
        """Judge rows (see ``judge_row``) on all workers; results in input order."""
        return list(self._threads.map(self.judge_row, rows))

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        for j in self.judges:
            j.close()
