"""The sandbox as a library on Ray: plain actors judging streams of rows.

Used by `selfdebug execute`, RL rewards and the Serve debugger alike. Plain actor calls
rather than Ray Data: there is one stage and nothing to stream into, and on 2 cores the
Data executor's overhead halved throughput (benchmarks/sandbox_throughput.py). A chunk
whose actor dies (or stops answering) is retried on a fresh actor; a chunk that keeps
failing becomes ``error`` rows naming the reason — a row is never dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Iterable, Iterator

from selfdebug.sandbox.judge import SandboxConfig
from selfdebug.sandbox.pool import error_verdict, verdict_row
from selfdebug.schema import Problem

log = logging.getLogger(__name__)

IN_FLIGHT_PER_ACTOR = 2  # one chunk running, one queued: no idle gap between chunks


class SandboxActorPool:
    """``actors`` sandbox actors, each with ``workers_per_actor`` fork servers.

    Rows: ``{"task_id": str, "code": str, ...}`` for a task in ``problems``, or
    ``{"problem": Problem, "code": str, ...}`` for an ad-hoc one. Results carry every input
    key (minus code and problem) plus status, passed, total, feedback, runtime, outcomes
    (a list), in input order. ``stats`` counts actors restarted, chunks retried and rows
    that got an error verdict because their actor kept failing.
    """

    def __init__(self, problems: dict[str, Problem] | None = None,
                 config: SandboxConfig | None = None, *, actors: int | None = None,
                 workers_per_actor: int = 1, cpus_per_actor: float = 0.5,
                 chunk_size: int = 16, retries: int = 2, ready_timeout_s: float = 120.0):
        import ray

        from selfdebug.sandbox.actor import SandboxActor

        self.config = config or SandboxConfig()
        self.workers_per_actor = max(1, workers_per_actor)
        self.chunk_size = max(1, chunk_size)
        self.retries = retries
        n = actors or max(1, int(ray.cluster_resources().get("CPU", 2)) // 2)
        self._problems_ref = ray.put(dict(problems or {}))
        # Restarts are ours (not Ray's max_restarts) so that they are counted and a chunk
        # is retried exactly ``retries`` times. Fractional CPUs: the fork servers do the
        # work in their own processes, and whole-CPU actors deadlock Ray Data on small
        # machines (DESIGN.md).
        self._cls = ray.remote(SandboxActor).options(num_cpus=cpus_per_actor, max_restarts=0,
                                                     max_task_retries=0)
        self._lock = threading.Lock()
        self.stats = {"actors_restarted": 0, "chunks_retried": 0, "rows_errored": 0}
        self._actors = [self._new_actor() for _ in range(n)]
        self.isolation = self._wait_ready(ready_timeout_s)

    # ------------------------------------------------------------------ actors
    def _new_actor(self):
        return self._cls.remote(self._problems_ref, self.config, self.workers_per_actor)

    def _wait_ready(self, timeout_s: float) -> str:
        import ray

        refs = [a.ready.remote() for a in self._actors]
        done, waiting = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        if waiting:
            self.shutdown()
            raise TimeoutError(f"{len(waiting)} of {len(refs)} sandbox actors did not start "
                               f"their fork servers within {timeout_s:g} s (is the cluster "
                               f"short of CPUs? each actor asks for {self._cls})")
        return ray.get(done[0])

    def _restart(self, slot: int, dead) -> None:
        """Replace the actor in ``slot`` unless another failure already did."""
        import ray

        with self._lock:
            if self._actors[slot] is not dead:
                return
            self.stats["actors_restarted"] += 1
            try:
                ray.kill(dead)
            except Exception:  # noqa: BLE001  already gone
                pass
            self._actors[slot] = self._new_actor()

    def _chunk_timeout(self, n_rows: int) -> float:
        # The worst legitimate case: every row runs into the per-sample cap, this chunk
        # queued behind another as long.
        per_worker = -(-n_rows // self.workers_per_actor)
        return IN_FLIGHT_PER_ACTOR * (per_worker + 1) * self.config.max_seconds_per_sample + 60

    # ------------------------------------------------------------------ judging
    def judge(self, rows: Iterable[dict]) -> Iterator[dict]:
        """Judge a stream of rows; yields verdict rows in input order as they complete."""
        import ray

        chunks = _chunked(rows, self.chunk_size)
        pending: dict = {}  # ref -> (slot, actor, chunk id, rows, attempt, submitted)
        done: dict[int, list[dict]] = {}
        next_out, exhausted = 0, False
        in_flight = [0] * len(self._actors)  # this call's chunks per actor slot

        def submit(slot: int, cid: int, part: list[dict], attempt: int) -> None:
            actor = self._actors[slot]
            ref = actor.judge_rows.remote(part)
            pending[ref] = (slot, actor, cid, part, attempt, time.monotonic())
            in_flight[slot] += 1

        def fill() -> None:
            nonlocal exhausted
            while not exhausted:
                slot = min(range(len(self._actors)), key=in_flight.__getitem__)
                if in_flight[slot] >= IN_FLIGHT_PER_ACTOR:
                    return
                item = next(chunks, None)
                if item is None:
                    exhausted = True
                    return
                submit(slot, *item, 0)

        fill()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=5.0)
            now = time.monotonic()
            failed = []
            if ready:
                ref = ready[0]
                slot, actor, cid, part, attempt, _ = pending.pop(ref)
                in_flight[slot] -= 1
                try:
                    done[cid] = ray.get(ref)
                except ray.exceptions.RayError as e:
                    failed.append((slot, actor, cid, part, attempt, e))
            for ref, (slot, actor, cid, part, attempt, t0) in list(pending.items()):
                if now - t0 > self._chunk_timeout(len(part)):  # an actor that stopped answering
                    pending.pop(ref)
                    in_flight[slot] -= 1
                    failed.append((slot, actor, cid, part, attempt, TimeoutError(
                        f"no answer within {self._chunk_timeout(len(part)):.0f} s")))
            for slot, actor, cid, part, attempt, err in failed:
                self._restart(slot, actor)
                if attempt < self.retries:
                    self.stats["chunks_retried"] += 1
                    submit(slot, cid, part, attempt + 1)
                    continue
                reason = (f"sandbox actor failed {attempt + 1} times on this chunk: "
                          f"{type(err).__name__}: {str(err)[:300]}")
                log.warning("%s", reason)
                self.stats["rows_errored"] += len(part)
                done[cid] = [verdict_row(r, error_verdict(reason)) for r in part]
            fill()
            while next_out in done:
                yield from done.pop(next_out)
                next_out += 1

    def judge_all(self, rows: Iterable[dict]) -> list[dict]:
        return list(self.judge(rows))

    async def ajudge(self, rows: Iterable[dict]) -> list[dict]:
        """For async callers (a Serve replica): the same, without blocking the event loop."""
        rows = list(rows)
        return await asyncio.to_thread(self.judge_all, rows)

    def shutdown(self) -> None:
        import ray

        for actor in self._actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001  already gone
                pass
        self._actors = []


def _chunked(rows: Iterable[dict], size: int) -> Iterator[tuple[int, list[dict]]]:
    it = iter(rows)
    for cid in itertools.count():
        part = list(itertools.islice(it, size))
        if not part:
            return
        yield cid, part
