"""Starting or joining a Ray cluster the same way from every job."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# Ray versions on which `shutdown_ray` uses Ray's private node object ([min, max));
# tests/test_train_engine.py fails when the installed Ray leaves this range.
RAY_PRIVATE_API_VERSIONS = ("2.60", "2.61")

# Ray puts its AF_UNIX sockets at <temp dir>/session_<date>_<time>_<µs>_<pid>/sockets/
# plasma_store[.N]; Linux allows 107 bytes for such a path. This is the longest suffix
# after the temp dir (session name with a 7-digit pid, an index on the socket name).
SOCKET_PATH_MAX = 107
RAY_SOCKET_SUFFIX = len("/session_2026-12-01_22-44-28_123456_1234567/sockets/plasma_store.1")
TEMP_PREFIX = "sdray-"


def ray_temp_dir() -> str:
    """A new directory for a local cluster's session, short enough for Ray's sockets.

    Under TMPDIR when that fits; else under /tmp, saying so (a long TMPDIR otherwise fails
    deep inside Ray with "AF_UNIX path length cannot exceed 107 bytes").
    """
    from selfdebug.errors import ClusterError

    fits = lambda d: len(os.fsencode(d)) + 1 + len(TEMP_PREFIX) + 8 + RAY_SOCKET_SUFFIX \
        <= SOCKET_PATH_MAX  # noqa: E731  (+8: mkdtemp's random part)
    base = tempfile.gettempdir()
    if not fits(base):
        if not (fits("/tmp") and os.access("/tmp", os.W_OK | os.X_OK)):
            raise ClusterError(
                f"the temp dir {base} is {len(os.fsencode(base))} bytes long: Ray's socket "
                f"paths under it would exceed the {SOCKET_PATH_MAX}-byte AF_UNIX limit and "
                "/tmp is not writable",
                f"set TMPDIR to a writable directory of at most "
                f"{SOCKET_PATH_MAX - RAY_SOCKET_SUFFIX - len(TEMP_PREFIX) - 9} bytes")
        print(f"selfdebug: TMPDIR {base} is too long for Ray's socket paths (AF_UNIX, "
              f"{SOCKET_PATH_MAX} bytes): Ray's session dir goes under /tmp instead",
              file=sys.stderr)
        base = "/tmp"
    return tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=base)


def init_ray(address: str | None = None, num_cpus: int | None = None, **kwargs):
    """Join ``address`` (or RAY_ADDRESS, as `ray job submit` sets it), else start a local one.

    A local cluster gets its own temp dir: `ray stop` leaves stale address files behind
    that a plain ``ray.init()`` would try to join.
    """
    import ray

    from selfdebug.errors import ClusterError, note_log

    # Ray Train (SFT, RL) notices a finished worker group at its next health check, 2 s
    # apart by default: 0.5 s returns each run ≈ 3 s sooner (measured on 2 cores, where
    # the demo runs nine trainings). Read from this process's environment when a trainer
    # starts; a user's own setting wins.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    if ray.is_initialized():
        return ray.get_runtime_context()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        try:
            return ray.init(address=address, log_to_driver=True, **kwargs)
        except Exception as e:  # noqa: BLE001  every start-up failure gets the same message
            raise ClusterError(
                f"could not join the Ray cluster at {address!r}: {type(e).__name__}: "
                f"{_first_line(e)}",
                f"check that it runs (`ray status --address {address}`) and is reachable, "
                "or leave ray_address/--address empty to start a local cluster") from e
    if num_cpus is None:
        # Small machines: declare a few more logical CPUs than cores so that fractional
        # actors (sandbox, vLLM, ingress) can all be scheduled (DESIGN.md).
        num_cpus = max(4, os.cpu_count() or 1)
    temp_dir = kwargs.pop("_temp_dir", None) or ray_temp_dir()
    # Ray keeps about num_cpus idle workers and kills the rest after a second; Ray Data's
    # fractional-CPU map tasks then respawn workers all run long, each paying Python and
    # import start-up (a third of the orchestration CPU of a CPU synthesis run).
    system_config = {"num_workers_soft_limit": 4 * num_cpus,
                     **kwargs.pop("_system_config", {})}
    try:
        ctx = ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            _temp_dir=temp_dir,
            _system_config=system_config,
            **kwargs,
        )
    except Exception as e:  # noqa: BLE001  a timeout under load, sockets, a full disk
        logs = Path(temp_dir) / "session_latest" / "logs"
        raise ClusterError(
            f"could not start a local Ray cluster ({type(e).__name__}: {_first_line(e)}); "
            f"Ray's logs: {logs}",
            "if the machine is busy, wait and re-run the same command (completed work is "
            "kept); check free space and memory; or join a running cluster with "
            "ray_address / --address") from e
    note_log("ray", Path(temp_dir) / "session_latest" / "logs")
    return ctx


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:300] if lines else ""


def in_ray_job() -> bool:
    """True in a `ray job submit` driver: the job supervisor hands it the job's config in
    this variable (as ray.init reads it), and its cwd is Ray's unpacked working dir."""
    return ("RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
            or "runtime_resources" in os.getcwd())


def lost_in_job(paths: dict[str, str]) -> list[str]:
    """``"name 'path'"`` for each output path (name → path) that a `ray job submit` driver
    would write into its unpacked working dir, which Ray deletes: relative ones, in a job
    (a URI or an absolute path is kept)."""
    if not in_ray_job():
        return []
    return [f"{name} {path!r}" for name, path in paths.items()
            if "://" not in path and not os.path.isabs(path)]


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
