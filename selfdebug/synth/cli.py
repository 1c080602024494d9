"""`selfdebug synth --config FILE [key=value ...]`: synthesize the self-debugging dataset.

Writes ``OUT/samples/*.parquet`` (every unique initial sample), ``OUT/debug/*.parquet``
(debug records, `selfdebug.dataset.DEBUG_SCHEMA`), ``OUT/manifest.json``,
``OUT/config.yaml`` (the resolved config) and ``OUT/synth_report.{md,json}``. Running the
same command again resumes: only shards missing from the manifest are redone.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import yaml

from selfdebug.config import add_config_arguments, load_job_config
from selfdebug.dataset import atomic_write_bytes
from selfdebug.errors import (
    EXIT_WRITE_FAILED,
    OutputError,
    check_output_dir,
    describe,
    note_log,
    report_expected,
)
from selfdebug.synth.config import SynthConfig


def run(cfg: SynthConfig) -> dict:
    """Run or resume ``cfg``; returns the report data."""
    from selfdebug.synth import shards
    from selfdebug.synth.pipeline import load_plan, run_pipeline
    from selfdebug.synth.report import write_run_report

    out = Path(cfg.out_dir)
    check_output_dir(out, "out_dir")  # before anything is loaded or started
    note_log("synth", out)
    _, plan = load_plan(cfg)  # fail on missing data or a foreign out_dir before writing
    if cfg.overwrite and out.exists():
        shutil.rmtree(out)
    shards.check_resume(shards.read_manifest(out), cfg.fingerprint(), plan)
    cfg_dict = asdict(cfg)
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "config.yaml", yaml.safe_dump(cfg_dict, sort_keys=False).encode())
        result = run_pipeline(cfg)
    except Exception as e:
        found = describe(e)
        if found is None or found[1] != EXIT_WRITE_FAILED:
            raise
        done = len(shards.read_manifest(out).get("shards", {})) if out.is_dir() else 0
        raise OutputError(f"{found[0]}; {done} of {len(plan)} shards are complete in {out} "
                          "(listed in its manifest.json)", found[2]) from e
    return write_run_report(cfg_dict, cfg.seed, out, result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="selfdebug synth", description=__doc__.split("\n")[0])
    add_config_arguments(parser, "jobs/configs/synth-*.yaml")
    args = parser.parse_args(argv)
    cfg = load_job_config(SynthConfig, args.config, args.overrides, "selfdebug synth")
    if cfg is None:
        return 2
    try:
        report = run(cfg)
    except (FileNotFoundError, ValueError) as e:  # missing data, a foreign out_dir
        return report_expected("selfdebug synth", e)
    shards = report["shards"]
    print((Path(cfg.out_dir) / "synth_report.md").read_text())
    if shards["incomplete"]:
        print(f"selfdebug synth: shards {shards['incomplete']} incomplete; re-run to finish",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
