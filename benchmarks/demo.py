"""The full demo (issue 18) and its figures, each against its named baseline in the same run:

- the method's held-out refine@1 after the last round against the base model's (gain);
- the generation-only control's refine@1 gain over the same rounds (same data minus repairs);
- the success-repair rate on a fixed set of the base model's wrong programs against the
  resample rate (a fresh sample per wrong one) of the same model (ratio).

    python benchmarks/demo.py [--seeds 0 1] [--config jobs/configs/demo-cpu.yaml] [key=value ...]

Each seed is one whole `selfdebug demo` run (pretraining is cached per seed). Prints the
figures per seed, wall and CPU time, and where the time went.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO / "jobs/configs/demo-cpu.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    # key=value overrides may come anywhere, also after --seeds (whose nargs would take them)
    argv = sys.argv[1:]
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    args = parser.parse_args([a for a in argv if a not in overrides])

    from selfdebug.config import load_config
    from selfdebug.demo.config import DemoConfig
    from selfdebug.demo.run import run_demo

    rows = []
    for seed in args.seeds:
        cfg = load_config(DemoConfig, args.config, [
            f"seed={seed}", f"world.seed={seed}",
            f"out_dir=runs/demo-bench-seed{seed}", *overrides])
        rep = run_demo(cfg)
        m, g = rep["results"].get("method", []), rep["results"].get("generation_only", [])
        last = m[-1] if m else {}
        rows.append({
            "seed": seed,
            "method refine@1": (m[0]["refine@1"], last.get("refine@1")) if m else None,
            "control refine@1": (g[0]["refine@1"], g[-1]["refine@1"]) if g else None,
            "fixed-set repair": (m[0]["fixed_set_repair_rate"], last.get("fixed_set_repair_rate"))
            if m else None,
            "resample (last round)": last.get("resample_rate"),
            "repair/resample": rep["acceptance"].get("repair_vs_resample", {}).get("value"),
            "wall_s": rep["wall_s"], "cpu_s": rep["cpu_s"],
            "base model": "cached" if rep["base_model"]["cached"] else "pretrained",
            "targets met": {k: v["ok"] for k, v in rep["acceptance"].items()},
        })
        print(json.dumps(rows[-1], indent=2))
        for s in rep["stages"]:
            cpu = "–" if s["cpu_s"] is None else f"{s['cpu_s']:.1f}"  # a joined cluster
            print(f"  {s['stage']:<28} {s['wall_s']:>8.1f} s wall {cpu:>8} s CPU")
    print("\nseed | method refine@1 base→last (gain) | control gain | fixed-set repair base→last"
          " | resample | ratio | wall s | CPU s")
    for r in rows:  # an arm left out of the run (arms=[...]) prints as "–"
        print(f"{r['seed']} | {_pair(r['method refine@1'], gain=True)} | "
              f"{_gain(r['control refine@1'])} | {_pair(r['fixed-set repair'])} | "
              f"{_num(r['resample (last round)'])} | {_num(r['repair/resample'], '')} | "
              f"{r['wall_s']:.0f} | {'–' if r['cpu_s'] is None else round(r['cpu_s'])}")
    return 0


def _num(x, fmt: str = ".3f") -> str:
    return "–" if x is None else format(x, fmt)


def _gain(pair) -> str:
    return "–" if pair is None else f"{100 * (pair[1] - pair[0]):+.1f} pts"


def _pair(pair, gain: bool = False) -> str:
    if pair is None:
        return "–"
    text = f"{pair[0]:.3f}→{pair[1]:.3f}"
    return f"{text} ({_gain(pair)})" if gain else text


if __name__ == "__main__":
    sys.exit(main())
