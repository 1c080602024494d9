"""Starting or joining a Ray cluster the same way from every job."""

from __future__ import annotations

import os
import tempfile


def init_ray(address: str | None = None, num_cpus: int | None = None, **kwargs):
    """Join ``address`` (or RAY_ADDRESS, as `ray job submit` sets it), else start a local one.

    A local cluster gets its own temp dir: `ray stop` leaves stale address files behind
    that a plain ``ray.init()`` would try to join.
    """
    import ray

    if ray.is_initialized():
        return ray.get_runtime_context()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        return ray.init(address=address, log_to_driver=True, **kwargs)
    if num_cpus is None:
        # Small machines: declare a few more logical CPUs than cores so that fractional
        # actors (sandbox, vLLM, ingress) can all be scheduled (DESIGN.md).
        num_cpus = max(4, os.cpu_count() or 1)
    temp_dir = kwargs.pop("_temp_dir", None) or tempfile.mkdtemp(prefix="selfdebug-ray-")
    # Ray keeps about num_cpus idle workers and kills the rest after a second; Ray Data's
    # fractional-CPU map tasks then respawn workers all run long, each paying Python and
    # import start-up (a third of the orchestration CPU of a CPU synthesis run).
    system_config = {"num_workers_soft_limit": 4 * num_cpus,
                     **kwargs.pop("_system_config", {})}
    return ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        _temp_dir=temp_dir,
        _system_config=system_config,
        **kwargs,
    )
