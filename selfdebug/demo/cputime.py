"""CPU seconds of this process and all its descendants (the local Ray cluster's
processes, the engines, the sandbox fork servers), counting exited children whose time
their parent collected. The machine is shared, so wall time alone says little."""

from __future__ import annotations


def cpu_seconds() -> float:
    import psutil

    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total
