"""Starting or joining a Ray cluster the same way from every job."""

from __future__ import annotations

import os
import tempfile

# Ray versions on which `shutdown_ray` uses Ray's private node object ([min, max));
# tests/test_train_engine.py fails when the installed Ray leaves this range.
RAY_PRIVATE_API_VERSIONS = ("2.60", "2.61")


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


def in_ray_job() -> bool:
    """True in a `ray job submit` driver: the job supervisor hands it the job's config in
    this variable (as ray.init reads it), and its cwd is Ray's unpacked working dir."""
    return ("RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
            or "runtime_resources" in os.getcwd())


def shutdown_ray() -> None:
    """Disconnect now; a local cluster this process started is stopped now.

    Left to the interpreter's exit hook, stopping a local cluster costs about 1.5 s more:
    the hook sleeps 0.5 s first, and the autoscaler monitor answers SIGTERM by reporting
    an "autoscaler failure" to the GCS, which Ray waits 1 s for. A local cluster has no
    autoscaler to stop gracefully, so the monitor is killed outright first (through
    Ray's node object, which has no public handle: only on the Ray versions in
    RAY_PRIVATE_API_VERSIONS, else the plain shutdown).
    """
    import ray

    from selfdebug.metadata import version_in

    if not ray.is_initialized():
        return
    node = getattr(ray._private.worker, "_global_node", None)
    if node is not None and version_in(ray.__version__, RAY_PRIVATE_API_VERSIONS):
        try:
            if node.is_head() and "monitor" in node.all_processes:
                node._kill_process_type("monitor", check_alive=False)
        except Exception:  # noqa: BLE001  a private API: the plain shutdown below still works
            pass
    ray.shutdown()
