"""Stall detection for long Ray stages: no progress for ``timeout_s`` → an error that says
what the stage waits for, never a silent hang.

A stage wraps its blocking part in a `Watchdog`, ticks it when work completes (a batch
out of the dataset, a training step) and may give a ``probe``: a cheap callable polled
from the watchdog's thread whose *changing* value counts as progress (a ledger's counts,
a metrics file's size). When nothing moves for ``timeout_s`` the watchdog interrupts the
main thread; leaving the ``with`` block then raises `StallError` with the cluster's
resources, what is free, the pending resource demands and the stage's own declared
demands (see `selfdebug.resources`). Ray Data's own scheduler holds tasks back without a
Ray-level demand when its operators' reservations exceed the CPUs it sees
(``backpressured: ResourceBudget``), so the declared demands are part of the message.

How the main thread is interrupted: SIGINT sent to that thread (`pthread_kill`), which
wakes it from a blocking wait (a lock, `ray.get`, a Ray Data iterator, `Trainer.fit`);
`_thread.interrupt_main` alone only sets a flag that a thread blocked in a lock never
reads (measured: a job stalled for minutes past its timeout). For the length of the
block SIGINT gets Python's default handler if it had none.
"""

from __future__ import annotations

import _thread
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any


class StallError(RuntimeError):
    """A stage made no progress for its configured time."""


def _fmt(resources: dict[str, float]) -> str:
    keep = {k: v for k, v in resources.items()
            if not k.startswith(("node:", "accelerator_type:")) and "memory" not in k}
    return ", ".join(f"{k} {v:g}" for k, v in sorted(keep.items())) or "none"


def pending_demands() -> list[str]:
    """Resource shapes that tasks, actors and placement groups wait for (the autoscaler's
    view; empty when it cannot be read)."""
    try:
        import ray
        from ray.autoscaler.v2.sdk import get_cluster_status

        status = get_cluster_status(ray.get_runtime_context().gcs_address, timeout=10)
    except Exception:  # noqa: BLE001  best effort: the message is still useful without it
        return []
    out = []
    demands = status.resource_demands
    for kind, items in (("task/actor", demands.ray_task_actor_demand),
                        ("placement group", demands.placement_group_demand),
                        ("requested", demands.cluster_constraint_demand)):
        for demand in items:
            for b in demand.bundles_by_count:
                out.append(f"{b.count} × {{{_fmt(b.bundle)}}} ({kind})")
    return out


def ray_data_tasks() -> int | None:
    """Tasks completed so far by every operator of this job's Ray Data datasets (read from
    Ray Data's stats actor, as the dashboard does; None when it cannot be read). Counts
    actor-pool batches too, so a pipeline that moves at all moves this number."""
    try:
        import ray
        from ray.data._internal.stats import STATS_ACTOR_NAME, STATS_ACTOR_NAMESPACE

        actor = ray.get_actor(STATS_ACTOR_NAME, namespace=STATS_ACTOR_NAMESPACE)
        job = ray.get_runtime_context().get_job_id()
        datasets = ray.get(actor.get_datasets.remote(job), timeout=10)
    except Exception:  # noqa: BLE001  private API, or no dataset yet
        return None
    return sum(int(op.get("progress") or 0) for d in datasets.values()
               for op in (d.get("operators") or {}).values())


def resource_report(declared: dict[str, str] | None = None) -> str:
    """The cluster's resources, what is free, what waits, and what the stage declared."""
    lines = []
    try:
        import ray

        if ray.is_initialized():
            lines.append(f"cluster resources: {_fmt(ray.cluster_resources())}")
            lines.append(f"available now: {_fmt(ray.available_resources())}")
            waiting = pending_demands()
            lines.append("pending demands: " + ("; ".join(waiting) if waiting else
                                                "none at Ray level (a Ray Data operator "
                                                "held back by its resource budget?)"))
    except Exception as e:  # noqa: BLE001
        lines.append(f"(cluster state unavailable: {type(e).__name__}: {e})")
    for name, what in (declared or {}).items():
        lines.append(f"declared by this job: {name}: {what}")
    return "\n  ".join(lines)


class Watchdog:
    """``with Watchdog("synth", 600, probe=...) as wd: ... wd.tick()``.

    ``timeout_s <= 0`` disables it. ``ray_data``: Ray Data's completed tasks count as
progress (`ray_data_tasks`). ``declared``: the stage's own resource requests, named
    in the error. ``log``: progress lines (probe value changes, at most every
    ``log_every_s``); None for silence.
    """

    def __init__(self, stage: str, timeout_s: float, *, probe: Callable[[], Any] | None = None,
                 ray_data: bool = False, declared: dict[str, str] | None = None, poll_s: float | None = None,
                 log: Callable[[str], None] | None = print, log_every_s: float = 15.0):
        self.stage, self.timeout_s = stage, float(timeout_s)
        if ray_data:  # Ray Data operators' completed tasks count as progress too
            own = probe
            probe = (lambda: {"ray_data_tasks": ray_data_tasks(), "stage": own()}) if own \
                else (lambda: {"ray_data_tasks": ray_data_tasks()})
        self.probe = probe
        self.declared = declared or {}
        self.poll_s = poll_s or max(0.2, min(5.0, self.timeout_s / 10 or 5.0))
        self.log, self.log_every_s = log, log_every_s
        self.error: StallError | None = None
        self.started = self.last = time.monotonic()
        self._value: Any = None
        self._logged = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._main = threading.main_thread() is threading.current_thread()
        self._old_handler = None

    def tick(self) -> None:
        self.last = time.monotonic()

    def __enter__(self) -> Watchdog:
        self.started = self.last = time.monotonic()
        if self._main and self.timeout_s > 0:
            self._old_handler = signal.getsignal(signal.SIGINT)
            if self._old_handler in (signal.SIG_IGN, signal.SIG_DFL, None):
                signal.signal(signal.SIGINT, signal.default_int_handler)
        if self.timeout_s > 0 or self.probe is not None:
            self._thread = threading.Thread(target=self._run, name=f"watchdog-{self.stage}",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.poll_s + 15)
        if self._old_handler is not None:
            signal.signal(signal.SIGINT, self._old_handler)
        if self.error is not None and (exc_type is None or exc_type is KeyboardInterrupt):
            raise self.error from None
        return False

    def _poll_probe(self) -> None:
        try:
            value = self.probe()
        except Exception:  # noqa: BLE001  a probe that fails this once is not progress
            return
        now = time.monotonic()
        if value != self._value:
            self._value = value
            self.tick()
            if self.log and now - self._logged >= self.log_every_s:
                self._logged = now
                self.log(f"[{self.stage}] {now - self.started:.0f} s: {value}")

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            if self.probe is not None:
                self._poll_probe()
            idle = time.monotonic() - self.last
            if self.timeout_s > 0 and idle > self.timeout_s:
                self.error = StallError(
                    f"{self.stage}: no progress for {idle:.0f} s (stall_timeout_s="
                    f"{self.timeout_s:g}); last progress: {self._value!r}. The stage is "
                    f"waiting for resources or work that does not come:\n  "
                    f"{resource_report(self.declared)}\nGive the job's actors fewer CPUs "
                    f"(fractional num_cpus), add nodes, or raise stall_timeout_s if the "
                    f"stage is merely slow.")
                if self._main:
                    self._interrupt_main()
                return

    @staticmethod
    def _interrupt_main() -> None:
        try:
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        except (AttributeError, OSError):  # no pthread_kill: the flag, at least
            _thread.interrupt_main()


def watch(items: Iterable, wd: Watchdog) -> Iterator:
    """Yield ``items``, ticking ``wd`` for each."""
    for item in items:
        wd.tick()
        yield item
