"""`selfdebug sft --config FILE [key=value ...]`: SFT on the debug dataset with Ray Train.

The driver builds the examples, lets Ray Data tokenize and pack them, starts a
`TorchTrainer` (one worker per GPU, or ``num_workers`` CPU workers) running
`selfdebug.train.loop.train_loop`, and copies the exported model out of the final
checkpoint. Re-running with the same ``name`` and ``storage_path`` resumes from the latest
checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from selfdebug.config import add_config_arguments, load_job_config
from selfdebug.train.config import SFTConfig


def build_trainer(cfg: SFTConfig):
    """A TorchTrainer for ``cfg`` (Ray must be initialised), with its datasets."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from selfdebug.train.data import build_examples, data_config, ray_datasets
    from selfdebug.train.loop import train_loop

    scratch = Path(tempfile.mkdtemp(prefix="sft-driver-"))
    try:  # the examples are read into memory: the fixture files can go
        train, val = build_examples(cfg, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    datasets = ray_datasets(train, val, cfg, cfg.model)
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": 1} if cfg.use_gpu else {})}
    storage = os.path.abspath(cfg.storage_path) if cfg.storage_is_local else cfg.storage_path
    return TorchTrainer(
        train_loop,
        train_loop_config=asdict(cfg),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=cfg.name, storage_path=storage,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=max(cfg.keep_checkpoints, 1)),
        ),
        datasets=datasets,
        dataset_config=data_config(),
    )


def run(cfg: SFTConfig) -> dict:
    """Train, then copy the final model to ``output_dir``; returns a summary."""
    from selfdebug.progress import Watchdog
    from selfdebug.ray_utils import init_ray
    from selfdebug.resources import describe, fit_to_cluster, sft_holders
    from selfdebug.train.loop import resolve_model

    # Resolve once on the driver, absolute, so every worker reads the same local files.
    cfg = replace(cfg, model=resolve_model(cfg.model), **{
        k: str(Path(v).resolve()) for k in ("data_dir", "mbpp_path", "log_dir", "output_dir")
        if (v := getattr(cfg, k)) and "://" not in v})
    init_ray(cfg.ray_address or None)
    cfg, holders = fit_to_cluster(cfg, sft_holders(cfg))  # a joined cluster may be small
    metrics = cfg.resolved_log_dir() / "metrics.jsonl"
    with Watchdog("sft", cfg.stall_timeout_s, ray_data=True, declared=describe(holders),
                  probe=lambda: metrics.stat().st_size if metrics.exists() else 0):
        result = build_trainer(cfg).fit()
    if result.error is not None:  # older Ray versions return instead of raising
        raise result.error
    out = cfg.resolved_output_dir()
    with result.checkpoint.as_directory() as d:
        shutil.copytree(Path(d) / "model", out, dirs_exist_ok=True)
        report = json.loads((Path(d) / "logs" / "sft_report.json").read_text())
    return {"output_dir": str(out), "checkpoint": result.checkpoint.path,
            "log_dir": str(cfg.resolved_log_dir()), **report["summary"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="selfdebug sft", description=__doc__.split("\n")[0])
    add_config_arguments(parser, "jobs/configs/sft-*.yaml")
    args = parser.parse_args(argv)
    cfg = load_job_config(SFTConfig, args.config, args.overrides, "selfdebug sft")
    if cfg is None:
        return 2
    summary = run(cfg)
    print(json.dumps(summary, indent=2, default=str))
    return 0
