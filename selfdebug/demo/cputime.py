"""CPU seconds of this process and all its descendants (the local Ray cluster's
processes, the engines, the trainers, the sandbox fork servers). The machine may be
shared, so wall time alone says little.

Processes come and go (a Ray Train worker group per SFT run), so a background thread
samples the process tree every ``interval`` seconds and keeps each process's last
cumulative CPU time: a process that exits loses at most its last interval.
"""

from __future__ import annotations

import threading


class CpuMeter:
    def __init__(self, interval: float = 1.0):
        import psutil

        self._psutil = psutil
        self._seen: dict[tuple[int, float], float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval,), daemon=True,
                                        name="cpu-meter")
        self._thread.start()

    def _sample(self) -> None:
        me = self._psutil.Process()
        for p in [me, *me.children(recursive=True)]:
            try:
                key = (p.pid, p.create_time())
                t = p.cpu_times()
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                continue
            with self._lock:
                self._seen[key] = t.user + t.system + t.children_user + t.children_system

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._sample()

    def sees(self, name: str) -> bool:
        """Whether a process called ``name`` is in this tree: ``raylet`` when the Ray
        cluster is this process's own, not when it joined one (`ray job submit`)."""
        me = self._psutil.Process()
        for p in me.children(recursive=True):
            try:
                if p.name() == name:
                    return True
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                continue
        return False

    def seconds(self) -> float:
        """CPU seconds used so far by this process tree."""
        self._sample()
        with self._lock:
            return sum(self._seen.values())

    def stop(self) -> None:
        self._stop.set()
