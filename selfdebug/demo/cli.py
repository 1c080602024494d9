"""`selfdebug demo --config jobs/configs/demo-cpu.yaml [key=value ...]`: LeDex at CPU scale.

Pretrains (or takes from the cache) a tiny Llama on the procedural world, runs
self-bootstrap rounds (the model's own samples and verified repairs → SFT → next round)
beside a generation-only control, and reports held-out init@1 / refine@1, repair and
resample rates per round in ``out_dir/demo_report.{md,json}`` and ``demo_rounds.png``.
"""

from __future__ import annotations

import argparse

from selfdebug.config import add_config_arguments, load_job_config
from selfdebug.demo.config import DemoConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="selfdebug demo", description=__doc__.split("\n")[0])
    add_config_arguments(parser, "jobs/configs/demo-cpu.yaml")
    args = parser.parse_args(argv)
    cfg = load_job_config(DemoConfig, args.config, args.overrides, "selfdebug demo")
    if cfg is None:
        return 2
    from selfdebug.demo.run import run_demo

    report = run_demo(cfg)
    print(open(f"{cfg.out_dir}/demo_report.md").read())
    return 0 if report else 1
