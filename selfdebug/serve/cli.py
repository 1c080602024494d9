"""`selfdebug serve`: run the debugger service (OpenAI-compatible model endpoint + /v1/debug)
on a local Ray cluster or a running one, print its URL, serve until interrupted.

    selfdebug serve --config jobs/configs/serve-cpu.yaml [key=value ...]
    selfdebug serve --config jobs/configs/serve-cpu.yaml address=auto model.path=runs/sft/export --detach
        (in-place update of the running application: same name, new checkpoint)
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from pathlib import Path

from selfdebug.config import add_config_arguments, load_job_config
from selfdebug.metadata import run_metadata
from selfdebug.serve.config import ServeConfig


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="selfdebug serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, "jobs/configs/serve-cpu.yaml")
    p.add_argument("--detach", action="store_true",
                   help="deploy (or update in place) and exit; the app keeps running on the "
                        "cluster (use with address=...)")
    p.add_argument("--ready-timeout", type=float, default=900.0,
                   help="seconds to wait for the application to be ready")
    return p


def _write_run_files(cfg: ServeConfig, url: str) -> None:
    from dataclasses import asdict

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    meta = run_metadata(config=asdict(cfg))
    meta["url"] = url
    (out / "metadata.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")


def deploy(cfg: ServeConfig, *, ready_timeout: float = 900.0, extra=()) -> str:
    """Start Serve's HTTP proxy (if not running), deploy or update the app in place (and
    ``extra`` RunTargets alongside), wait until all are running; the app's base URL."""
    from ray import serve

    from selfdebug.serve.app import build_debug_app

    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    target = serve.RunTarget(target=build_debug_app(cfg), name=cfg.name,
                             route_prefix=cfg.route_prefix)
    serve.run_many([target, *extra], wait_for_applications_running=False)
    wait_running([cfg.name, *(t.name for t in extra)], ready_timeout)
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    return f"http://{host}:{cfg.port}{cfg.route_prefix.rstrip('/')}"


def wait_running(names: list[str], timeout_s: float) -> None:
    """Until every named application is RUNNING; raises on DEPLOY_FAILED/UNHEALTHY or after
    ``timeout_s``, naming the application and Serve's message (a deployment that cannot be
    scheduled, say, otherwise waits forever)."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while True:
        apps = serve.status().applications
        states = {n: apps.get(n) for n in names}
        if all(a is not None and a.status == "RUNNING" for a in states.values()):
            return
        for n, a in states.items():
            if a is not None and a.status in ("DEPLOY_FAILED", "UNHEALTHY"):
                raise RuntimeError(f"application {n!r} {a.status}: {a.message}"
                                   f"{_deployment_messages(a)}")
        if time.monotonic() > deadline:
            waiting = {n: (a.status if a else "absent") for n, a in states.items()}
            detail = "".join(_deployment_messages(a) for a in states.values() if a)
            raise TimeoutError(f"Serve applications not running after {timeout_s:.0f} s: "
                               f"{waiting}{detail}")
        time.sleep(0.5)


def _deployment_messages(app) -> str:
    return "".join(f"\n  {name}: {d.status} {d.message}" for name, d in
                   app.deployments.items() if d.status != "HEALTHY")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cfg = load_job_config(ServeConfig, args.config, args.overrides, "selfdebug serve")
    if cfg is None:
        return 2
    from selfdebug.errors import ClusterError, check_output_dir
    from selfdebug.ray_utils import init_ray, shutdown_ray

    check_output_dir(cfg.out_dir)  # before any cluster starts
    init_ray(cfg.address or None, num_cpus=cfg.num_cpus or None)
    try:
        url = deploy(cfg, ready_timeout=args.ready_timeout)
    except (RuntimeError, TimeoutError) as e:  # Serve's reason, not a Ray traceback
        shutdown_ray()
        raise ClusterError(f"the Serve application did not start: {e}",
                           "see the replica logs under the Ray session's logs/serve") from e
    _write_run_files(cfg, url)
    print(f"selfdebug serve: ready at {url}  (OpenAI base_url {url}/v1, POST {url}/v1/debug)",
          flush=True)
    if args.detach:
        return 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        while not stop:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    from ray import serve

    serve.shutdown()
    shutdown_ray()
    return 0
