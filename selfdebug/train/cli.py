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
import sys
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
    check_schedule(cfg, len(train))
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


def _absolute(cfg: SFTConfig) -> SFTConfig:
    """Local paths made absolute on the driver, so every worker reads the same files."""
    def local(v: str) -> str:
        return v if not v or "://" in v else str(Path(v).resolve())

    return replace(cfg, data_dirs=[local(d) for d in cfg.data_dirs],
                   **{k: local(getattr(cfg, k)) for k in ("mbpp_path", "log_dir", "out_dir")})


def check_schedule(cfg: SFTConfig, n_examples: int) -> None:
    """Fail on the driver, before any worker starts, when warm-up cannot end: the steps are
    estimated from the example count (the loop plans exactly, from packed rows)."""
    steps = cfg.epochs * (n_examples // cfg.global_batch_size)
    if cfg.max_steps > 0:
        steps = min(steps, cfg.max_steps)
    if cfg.warmup_steps >= steps:
        raise ValueError(
            f"warmup_steps {cfg.warmup_steps} ≥ total optimizer steps ≈{steps} ({n_examples} "
            f"training examples × {cfg.epochs} epoch(s) / global_batch_size "
            f"{cfg.global_batch_size}): the learning rate would never reach lr {cfg.lr}; lower "
            "warmup_steps or global_batch_size")


def plan(cfg: SFTConfig, tokenizer: str = "") -> dict:
    """What a run of ``cfg`` would do, without Ray or training: examples per kind, packed
    rows, tokens, and the schedule the training loop computes from them (tokens counted
    with ``tokenizer``, default the model's)."""
    from collections import Counter

    from selfdebug.train.data import PACK_WINDOW, build_examples, rows_from_examples
    from selfdebug.train.loop import resolve_model
    from selfdebug.train.schedule import plan_schedule, row_counts, warmup_problem

    scratch = Path(tempfile.mkdtemp(prefix="sft-plan-"))
    try:
        train, val = build_examples(cfg, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    tok = resolve_model(tokenizer or cfg.model)
    rows = rows_from_examples(train, tok, cfg.max_seq_len, cfg.packing, PACK_WINDOW)
    world = cfg.num_workers
    rows = sorted(rows, key=lambda r: r["row_id"])
    per_worker = len(rows) // world  # Ray's equal split drops the remainder
    kept = [r for i in range(world) for r in rows[i::world][:per_worker]]
    examples, n_rows, tokens = row_counts(kept)
    schedule = plan_schedule(cfg, world=world, examples=examples, rows=n_rows, tokens=tokens,
                             rows_per_worker=per_worker, check=False)
    return {"error": warmup_problem(cfg, schedule.total_steps, examples),
            "examples_by_kind": dict(sorted(Counter(e["kind"] for e in train).items())),
            "train_examples": len(train), "validation_examples": len(val),
            "dropped_longer_than_max_seq_len": len(train) - sum(
                len(r["example_ids"]) for r in rows),
            "tokenizer": tok, **schedule.summary()}


def run(cfg: SFTConfig) -> dict:
    """Train, then copy the final model to ``out_dir``; returns a summary."""
    from selfdebug.progress import Watchdog
    from selfdebug.ray_utils import init_ray
    from selfdebug.resources import describe, fit_to_cluster, sft_holders
    from selfdebug.train.loop import resolve_model

    cfg = _absolute(replace(cfg, model=resolve_model(cfg.model)))
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
    return {"out_dir": str(out), "checkpoint": result.checkpoint.path,
            "log_dir": str(cfg.resolved_log_dir()), **report["summary"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="selfdebug sft", description=__doc__.split("\n")[0])
    add_config_arguments(parser, "jobs/configs/sft-*.yaml")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the examples, optimizer steps, warm-up fraction and tokens "
                             "per step this config gives, without training")
    parser.add_argument("--tokenizer", default="",
                        help="--dry-run: count tokens with this model's tokenizer (default: "
                             "the config's model)")
    args = parser.parse_args(argv)
    cfg = load_job_config(SFTConfig, args.config, args.overrides, "selfdebug sft")
    if cfg is None:
        return 2
    try:
        summary = plan(cfg, args.tokenizer) if args.dry_run else run(cfg)
    except ValueError as e:  # a schedule that cannot work, no examples: the message says why
        print(f"selfdebug sft: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    if summary.get("error"):  # --dry-run: the plan is printed, and what a run would refuse
        print(f"selfdebug sft: {summary['error']}", file=sys.stderr)
        return 2
    return 0
