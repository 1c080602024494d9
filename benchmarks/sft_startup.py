"""SFT start-up: whole `selfdebug sft` runs on a small dataset, as the demo makes nine of.

Each run is `selfdebug.train.cli.run` in one live local Ray cluster (the demo's way: the
cluster and its engines stay up between trainings), alternating four settings, so that
what differs is only what each run spends outside its training steps:

- baseline: ``ingest: ray_data`` and Ray Train's default 2 s health check (before both
  changes: the Ray Data actors that stream the worker its shard, and up to two health
  checks before a finished run returns);
- ``ray_data`` at a 0.5 s health check (`selfdebug.ray_utils.init_ray`'s default);
- ``worker`` ingest (the worker tokenizes the data itself) at 0.5 s;
- the same in a resident trainer (`selfdebug.train.resident`: one process trains run after
  run, no Ray Train run per training): the demo's setting.

Prints seconds per run, the ratio to the baseline, and each setting's final training loss
(the same rows in the same order: the losses must match).

    python benchmarks/sft_startup.py [--model DIR] [--data-dir DIR] [--repeats 3]

Default data: the MBPP fixture (``../shared/data/mbpp.jsonl``) and the tiny local model; the
demo's own: ``--model .cache/demo-base/base-<hash>/model --data-dir
runs/demo-cpu/generation_only/round-1/data``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from selfdebug.demo.base_model import sft_config
from selfdebug.train.config import SFTConfig

SETTINGS = {  # name: (ingest, Ray Train health check interval s, in the resident trainer)
    "baseline: ray_data, 2 s checks": ("ray_data", "2.0", False),
    "ray_data, 0.5 s checks": ("ray_data", "0.5", False),
    "worker, 0.5 s checks": ("worker", "0.5", False),
    "worker, resident trainer": ("worker", "0.5", True),
}
HEALTH = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


def _config(args, name: str, ingest: str, root: Path) -> SFTConfig:
    """The demo's own training config (`demo.base_model.sft_config`), warm-up 2 steps, with
    the ingest under test; no data dir: the MBPP fixture."""
    cfg = sft_config(name, args.model, Path(args.data_dir or "."), root / name,
                     root / name / "model", lr=1e-3, warmup=2, batch=16, mbs=4,
                     max_seq_len=512, seed=0, epochs=args.epochs)
    return replace(cfg, data_dirs=[args.data_dir] if args.data_dir else [], ingest=ingest,
                   log_every=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from selfdebug.config import resolve_model
    from selfdebug.ray_utils import init_ray, shutdown_ray
    from selfdebug.train.cli import run
    from selfdebug.train.metrics import read_metrics
    from selfdebug.train.resident import ResidentTrainer

    args.model = resolve_model(args.model)
    # logical CPUs: the resident trainer holds its 2 beside each Ray Train run's worker and
    # Ray Data's tasks (the runs go one at a time)
    init_ray(num_cpus=6)
    root = Path(tempfile.mkdtemp(prefix="sft-startup-"))
    seconds: dict[str, list[float]] = {k: [] for k in SETTINGS}
    losses: dict[str, set[float]] = {k: set() for k in SETTINGS}
    try:
        # one untimed run first: the cluster's first training imports everything cold
        run(_config(args, "warmup", "ray_data", root))
        resident = ResidentTrainer(cpus=2.0)  # the demo's: started once, before its first
        run(_config(args, "warmup-resident", "worker", root), resident)  # training
        for rep in range(args.repeats):
            names = list(SETTINGS) if rep % 2 == 0 else list(reversed(SETTINGS))
            for setting in names:
                ingest, interval, in_resident = SETTINGS[setting]
                os.environ[HEALTH] = interval  # read when the trainer starts
                cfg = _config(args, f"r{rep}-{ingest}-{interval}-{in_resident}", ingest, root)
                t0 = time.perf_counter()
                summary = run(cfg, resident if in_resident else None)
                seconds[setting].append(time.perf_counter() - t0)
                last = [r for r in read_metrics(cfg.resolved_log_dir()) if r["split"] == "train"]
                losses[setting].add(round(last[-1]["loss"], 7))
                print(f"[{setting}] {seconds[setting][-1]:.1f} s, {summary['steps']} steps, "
                      f"{summary['tokens']} tokens", flush=True)
    finally:
        shutdown_ray()
    base = statistics.median(seconds[next(iter(SETTINGS))])
    print(f"\n{'setting':32s} {'median s/run':>12s} {'vs baseline':>12s}  final loss")
    for setting, xs in seconds.items():
        m = statistics.median(xs)
        print(f"{setting:32s} {m:12.1f} {base / m:11.2f}×  {sorted(losses[setting])}")


if __name__ == "__main__":
    main()
