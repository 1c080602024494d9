"""The demo's judging with each distinct program run once per run, against running every
program it is asked for (the baseline: the demo before the verdict cache).

Replays a finished demo run's held-out samples (``<run>/samples/*.jsonl``, one sandbox
call per file, in the run's order) through the demo's own `Sandbox` (one actor, the demo
config's sandbox settings), once through its verdict cache and once straight to its actor
pool, alternating; prints seconds, programs run, the ratio, and whether every verdict
agrees.

    python benchmarks/demo_judging.py --run runs/demo-cpu [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default=str(REPO / "runs" / "demo-cpu"))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from selfdebug.config import load_config
    from selfdebug.demo.config import DemoConfig
    from selfdebug.demo.engines import Sandbox
    from selfdebug.ray_utils import init_ray, shutdown_ray
    from selfdebug.world.generate import WorldConfig, generate_world, problems_of

    run = Path(args.run)
    report = json.loads((run / "demo_report.json").read_text())
    cfg = load_config(DemoConfig, REPO / "jobs" / "configs" / "demo-cpu.yaml")
    world = WorldConfig(**report["metadata"]["config"]["world"])
    problems = problems_of(generate_world(world)["test"])
    files = sorted((run / "samples").glob("*.jsonl"), key=lambda f: (f.name != "base-init.jsonl",
                                                                        f.name))
    calls = [[(r["task_id"], r["code"]) for r in map(json.loads, f.open())] for f in files]
    print(f"{sum(map(len, calls))} programs in {len(calls)} calls ({run})")
    init_ray()
    results: dict[str, list[float]] = {"each program": [], "each distinct program once": []}
    verdicts: dict[str, list[str]] = {}
    try:
        for rep in range(args.repeats):
            modes = list(results) if rep % 2 == 0 else list(reversed(results))
            for mode in modes:
                sandbox = Sandbox(problems, cfg.sandbox)
                try:
                    t0, statuses = time.perf_counter(), []
                    for rows in calls:
                        if mode == "each program":  # the sandbox pool as the demo called it
                            got = sandbox.pool.judge_all([{"task_id": t, "code": c}
                                                          for t, c in rows])
                        else:
                            got = sandbox.judge(rows)
                        statuses += [v["status"] for v in got]
                    seconds = time.perf_counter() - t0
                    runs = sandbox.executions or len(statuses)
                finally:
                    sandbox.shutdown()
                results[mode].append(seconds)
                verdicts.setdefault(mode, statuses)
                print(f"[{mode}] {seconds:.1f} s, {runs} programs run", flush=True)
    finally:
        shutdown_ray()
    base = min(results["each program"])
    for mode, xs in results.items():
        print(f"{mode:28s} best {min(xs):6.1f} s  {base / min(xs):5.2f}×")
    same = verdicts["each program"] == verdicts["each distinct program once"]
    print(f"every verdict the same: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
