"""The sandbox as a Serve deployment: each replica holds a pool of fork servers and judges
(problem, code) pairs sent by the ingress. Tests never run in the ingress or model replicas.
"""

from __future__ import annotations

import asyncio
import logging
import os

from selfdebug.config import SandboxSection
from selfdebug.sandbox.pool import SandboxPool
from selfdebug.schema import Problem

log = logging.getLogger("ray.serve")


class SandboxServer:
    """Serve deployment class (see `app.sandbox_deployment` for its options)."""

    def __init__(self, section: SandboxSection):
        self.pool = SandboxPool({}, section.judge_config(), section.workers_per_actor)
        for judge in self.pool.judges:  # start the fork servers now, not on the 1st request
            if not judge.server.alive:
                judge.server.start()
        log.info("sandbox replica ready: %d fork servers, isolation %s",
                 len(self.pool.judges), self.pool.isolation)

    async def judge(self, problem: Problem, code: str) -> dict:
        # The pool blocks on its fork servers: run it off the replica's event loop.
        return await asyncio.to_thread(self._judge, problem, code)

    def _judge(self, problem: Problem, code: str) -> dict:
        return self.pool.judge_row({"problem": problem, "code": code})

    async def ping(self) -> dict:
        return {"isolation": self.pool.isolation, "pid": os.getpid(),
                "restarts": self.pool.restarts}

    def __del__(self):
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.close()
