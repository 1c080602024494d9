"""`selfdebug eval --config FILE [key=value ...]` | `selfdebug eval --recompute RESULTS_DIR`.

Pass@k for Init / Refine / Expl+Refine over refinement rounds (LeDex §4) for every model
and benchmark in the config. Re-running with the same out_dir continues where a killed
run stopped; ``--recompute`` rebuilds every number from the stored verdicts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from selfdebug.config import ConfigError, add_config_arguments, load_job_config
from selfdebug.errors import check_output_dir, note_log, report_expected
from selfdebug.evaluate.config import EvalConfig


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="selfdebug eval", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--recompute", type=Path, metavar="RESULTS_DIR",
                     help="recompute the metrics from a results directory (no model, no Ray)")
    add_config_arguments(p, "jobs/configs/eval-*.yaml", group=src)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from selfdebug.evaluate.pipeline import recompute, run_eval
    from selfdebug.evaluate.report import table2
    from selfdebug.evaluate.store import FingerprintMismatch

    if args.recompute:
        if args.overrides:
            print("selfdebug eval: --recompute takes no overrides", file=sys.stderr)
            return 2
        try:
            data = recompute(args.recompute)
        except (ConfigError, FileNotFoundError, ValueError) as e:
            print(f"selfdebug eval: error: {e}", file=sys.stderr)
            return 2
        print(table2(data["results"], data["models"], data["benchmarks"], data["modes"],
                     data["ks"]))
        match = data.get("matches_results_json")
        if match is not None:
            print(f"results.json {'matches' if match else 'DIFFERS FROM'} the stored verdicts")
        return 0 if match is not False else 1
    cfg = load_job_config(EvalConfig, args.config, args.overrides, "selfdebug eval")
    if cfg is None:
        return 2
    try:
        check_output_dir(cfg.out_dir, "out_dir")  # before any model or cluster starts
        note_log("eval", cfg.out_dir)
        data = run_eval(cfg, log=lambda s: print(s, flush=True))
    except (FingerprintMismatch, FileNotFoundError, ValueError) as e:
        return report_expected("selfdebug eval", e)
    print(table2(data["results"], data["models"], data["benchmarks"], data["modes"], data["ks"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
