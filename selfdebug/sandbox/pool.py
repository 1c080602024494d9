"""Several fork servers behind one call: judge many (task_id, code) rows in parallel."""

from __future__ import annotations

import logging
import queue
from concurrent.futures import ThreadPoolExecutor

from selfdebug.sandbox.forkserver import ForkServer, ServerDied, detect_isolation
from selfdebug.sandbox.judge import Judge, SandboxConfig
from selfdebug.schema import ExecResult

log = logging.getLogger(__name__)


class SandboxPool:
    """``workers`` judges, each with its own fork server; rows are spread over them.

    A crashed fork server is restarted and its row retried once; a row that crashes it again
    is reported as ``killed``, never dropped.
    """

    def __init__(self, problems, config: SandboxConfig | None = None, workers: int = 1):
        self.config = config or SandboxConfig()
        iso = detect_isolation(self.config.isolation)
        problems = problems if isinstance(problems, dict) else {p.task_id: p for p in problems}
        prepared: dict = {}
        self.judges = [Judge(problems, self.config, ForkServer(iso, self.config.tmpfs_mb << 20),
                             prepared) for _ in range(max(1, workers))]
        self._free: queue.Queue[Judge] = queue.Queue()
        for j in self.judges:
            self._free.put(j)
        self._threads = ThreadPoolExecutor(len(self.judges))
        self.restarts = 0

    @property
    def isolation(self) -> str:
        return self.judges[0].isolation

    def run(self, task_id: str, code: str) -> ExecResult:
        judge = self._free.get()
        try:
            for attempt in (1, 2):
                try:
                    return judge.run(task_id, code)
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

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        for j in self.judges:
            j.close()
