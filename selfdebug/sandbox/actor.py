"""The sandbox as a Ray actor: a pool of fork servers behind ``map_batches`` or plain calls."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from selfdebug.sandbox.judge import SandboxConfig
from selfdebug.sandbox.pool import SandboxPool


class SandboxActor:
    """Callable class for ``Dataset.map_batches``; also usable as ``ray.remote(SandboxActor)``.

    Reads ``task_id`` and ``code_column``; adds ``prefix + status/passed/total/feedback/
    runtime/outcomes`` (outcomes as a JSON list). ``problems`` may be an ObjectRef so that
    every actor shares one copy in the object store.
    """

    def __init__(self, problems, config: SandboxConfig | dict | None = None, workers: int = 1,
                 code_column: str = "code", prefix: str = ""):
        import ray

        if isinstance(problems, ray.ObjectRef):
            problems = ray.get(problems)
        problems = problems or {}
        if isinstance(config, dict):
            config = SandboxConfig(**config)
        self.pool = SandboxPool(problems, config, workers)
        self.code_column, self.prefix = code_column, prefix

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = list(zip(batch["task_id"].tolist(), batch[self.code_column].tolist()))
        results = self.pool.run_many([(str(t), str(c) if c is not None else "") for t, c in rows])
        p = self.prefix
        batch[p + "status"] = np.array([r.status for r in results], dtype=object)
        batch[p + "passed"] = np.array([r.passed for r in results], dtype=np.int64)
        batch[p + "total"] = np.array([r.total for r in results], dtype=np.int64)
        batch[p + "feedback"] = np.array([r.feedback for r in results], dtype=object)
        batch[p + "runtime"] = np.array([r.runtime for r in results], dtype=np.float64)
        batch[p + "outcomes"] = np.array([json.dumps(r.outcomes) for r in results], dtype=object)
        return batch

    def run_rows(self, rows: list[tuple[str, str]]) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.pool.run_many(rows)]

    def judge_rows(self, rows: list[dict]) -> list[dict[str, Any]]:
        """Rows as ``SandboxPool.judge_rows`` takes them (task_id or an ad-hoc problem)."""
        return self.pool.judge_rows(rows)

    def pid(self) -> int:
        import os

        return os.getpid()

    def isolation(self) -> str:
        return self.pool.isolation

    def ready(self) -> str:
        """Start the fork servers now (they otherwise start on first use); the isolation."""
        for judge in self.pool.judges:
            if not judge.server.alive:
                judge.server.start()
        return self.pool.isolation

    def __del__(self):
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.close()


def execute_dataset(ds, problems_ref, config: SandboxConfig | None = None, *, actors: int = 1,
                    workers_per_actor: int = 2, cpus_per_actor: float = 0.5,
                    code_column: str = "code", prefix: str = "", batch_size: int = 16):
    """Add verdict columns to a Ray Dataset of (task_id, code) rows.

    Actors take fractional CPUs: the fork servers do the work in their own processes, and
    whole-CPU actors deadlock Ray Data on small machines (DESIGN.md).
    """
    import ray.data

    return ds.map_batches(
        SandboxActor,
        fn_constructor_kwargs={"problems": problems_ref, "config": config, "workers":
                               workers_per_actor, "code_column": code_column, "prefix": prefix},
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
        batch_size=batch_size,
        batch_format="numpy",
    )
