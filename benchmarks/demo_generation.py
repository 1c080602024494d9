"""The demo's generation with its committed engine settings against other ones.

Replays a synthesis stage of the demo (its base model's samples on train problems, then
repairs of the wrong ones, with the demo's per-request seeds) through engine pools that
differ from the demo's `engine` section in one setting each, all started in one cluster and
called in alternation; prints seconds spent generating per setting, ratios to the baseline
(one engine: the demo's setting before two), and whether every completion is the same.

    python benchmarks/demo_generation.py --model .cache/demo-base/<hash>/model \
        [--problems 500] [--attempts 2] [--repeats 2] [--settings one,committed,compiled | one,committed,three]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SETTINGS = {
    "one": {"num_replicas": 1, "num_cpus": 1.0},  # the baseline
    "committed": {},  # jobs/configs/demo-cpu.yaml: two engines
    "three": {"num_replicas": 3},  # a third engine on 2 cores
    # torch.compile (inductor) instead of eager: slower start, maybe faster steps
    "compiled": {"enforce_eager": False},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a demo base model directory")
    parser.add_argument("--problems", type=int, default=500)
    parser.add_argument("--attempts", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    # not all at once by default: their engines would want more Ray CPUs than a 2-core
    # machine declares (4)
    parser.add_argument("--settings", default="one,committed,compiled")
    args = parser.parse_args()

    from selfdebug.config import load_config
    from selfdebug.demo.config import DemoConfig
    from selfdebug.demo.engines import Engines, Sampling, Sandbox
    from selfdebug.demo.rollout import repair, sample
    from selfdebug.ray_utils import init_ray, shutdown_ray
    from selfdebug.world.generate import generate_world, problems_of

    names = args.settings.split(",")
    unknown = sorted(set(names) - set(SETTINGS))
    if unknown or "one" not in names:
        parser.error(f"--settings: 'one' and any of {list(SETTINGS)}; got {unknown}")
    cfg = load_config(DemoConfig, REPO / "jobs" / "configs" / "demo-cpu.yaml")
    problems = problems_of(generate_world(cfg.world)["train"][:args.problems])
    by_id = {p.task_id: p for p in problems}
    s = Sampling(cfg.synth.temperature, cfg.synth.top_p, cfg.synth.max_tokens, cfg.seed)
    init_ray()
    pools: dict[str, Engines] = {}
    sandbox = None
    seconds: dict[str, list[float]] = {n: [] for n in names}
    texts: dict[str, list[str]] = {}
    try:
        sandbox = Sandbox(problems, cfg.sandbox)
        for name in names:
            t0 = time.perf_counter()
            pools[name] = Engines(cfg.engine.for_model(args.model, seed=cfg.seed,
                                                       **SETTINGS[name]), log=lambda _: None)
            pools[name].load(args.model)
            print(f"[{name}] engines started in {time.perf_counter() - t0:.1f} s", flush=True)
        for rep in range(args.repeats):
            for name in names if rep % 2 == 0 else list(reversed(names)):
                engines = pools[name]
                before = engines.seconds
                samples = sample(engines, sandbox, problems, cfg.synth.samples, s, "r0:synth")
                wrong = [r for r in samples if r["status"] != "passed"]
                fixes = repair(engines, sandbox, by_id, wrong, args.attempts, s, "r0:synth")
                seconds[name].append(engines.seconds - before)
                texts.setdefault(name, [r["code"] for r in samples + fixes])
                print(f"[{name}] {len(samples)} samples + {len(fixes)} repairs generated in "
                      f"{seconds[name][-1]:.1f} s", flush=True)
    finally:
        for held in (*pools.values(), sandbox):
            if held is not None:
                held.shutdown()
        shutdown_ray()
    base = min(seconds["one"])
    for name in names:
        same = texts[name] == texts["one"]
        print(f"{name:10s} best {min(seconds[name]):6.1f} s  {base / min(seconds[name]):5.2f}× "
              f"one engine; every completion the same: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
