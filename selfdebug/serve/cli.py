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
import sys
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


def deploy(cfg: ServeConfig, *, ready_timeout: float = 900.0) -> str:
    """Start Serve's HTTP proxy (if not running) and deploy/update the app; its base URL.
    Blocks until every deployment is running, or raises naming the timeout."""
    from ray import serve

    from selfdebug.serve.app import build_debug_app

    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    _run_and_wait(build_debug_app(cfg), cfg, ready_timeout)
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    return f"http://{host}:{cfg.port}{cfg.route_prefix.rstrip('/')}"


def _run_and_wait(app, cfg: ServeConfig, timeout_s: float):
    """serve.run waits for the app to be RUNNING; a deployment that cannot start makes it
    raise. Bounded here so a stuck deployment (no CPUs left, say) is reported."""
    import threading

    from ray import serve

    result: dict = {}

    def target():
        try:
            result["handle"] = serve.run(app, name=cfg.name, route_prefix=cfg.route_prefix)
        except Exception as e:  # noqa: BLE001  re-raised in the caller's thread
            result["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        status = serve.status().applications.get(cfg.name)
        raise TimeoutError(f"application {cfg.name!r} not ready after {timeout_s:.0f} s; "
                           f"Serve status: {status}")
    if "error" in result:
        raise result["error"]
    return result["handle"]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cfg = load_job_config(ServeConfig, args.config, args.overrides, "selfdebug serve")
    if cfg is None:
        return 2
    from selfdebug.ray_utils import init_ray, shutdown_ray

    init_ray(cfg.address or None, num_cpus=cfg.num_cpus or None)
    try:
        url = deploy(cfg, ready_timeout=args.ready_timeout)
    except Exception as e:  # noqa: BLE001  print the reason, not a Ray traceback
        print(f"selfdebug serve: deployment failed: {type(e).__name__}: {e}", file=sys.stderr)
        shutdown_ray()
        return 1
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
