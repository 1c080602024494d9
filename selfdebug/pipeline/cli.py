"""`selfdebug pipeline --config FILE [key=value ...]`: synth → sft → rl → eval → one report.

Every stage writes under ``run_dir/<step>/`` (its config, metrics, report, outputs) and
``run_dir/report.{md,json}`` holds the final comparison and each stage's time and cost.
Running the same command again skips complete stages and resumes an interrupted one; a
changed stage config re-runs that stage and those after it.
"""

from __future__ import annotations

import argparse
import sys

from selfdebug.config import ConfigError, add_config_arguments, load_job_config
from selfdebug.pipeline.config import PipelineConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="selfdebug pipeline",
                                     description=__doc__.split("\n")[0])
    add_config_arguments(parser, "jobs/configs/pipeline-*.yaml")
    parser.add_argument("--plan", action="store_true",
                        help="print the steps and their wired configs, run nothing")
    args = parser.parse_args(argv)
    cfg = load_job_config(PipelineConfig, args.config, args.overrides, "selfdebug pipeline")
    if cfg is None:
        return 2
    from selfdebug.pipeline.run import run_pipeline
    from selfdebug.progress import StallError
    from selfdebug.ray_utils import shutdown_ray

    try:
        if args.plan:
            import yaml

            from selfdebug.pipeline.config import plan

            cfg.validate()
            for step in plan(cfg):
                step.typed()
                print(yaml.safe_dump({step.id: {"after": step.after, "outputs": step.outputs,
                                                "config": step.data}}, sort_keys=False))
            return 0
        data = run_pipeline(cfg, log=lambda s: print(s, flush=True))
    except (ConfigError, FileNotFoundError, ValueError, StallError) as e:
        print(f"selfdebug pipeline: error: {e}", file=sys.stderr)
        return 2
    finally:
        shutdown_ray()
    print(open(f"{data['run_dir']}/report.md").read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
