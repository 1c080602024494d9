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
from selfdebug.errors import report_expected
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
    datasets = ray_datasets(train, val, cfg, cfg.model) if cfg.ingest == "ray_data" else None
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
        dataset_config=data_config() if datasets else None,
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

    from selfdebug.config import resolve_model
    from selfdebug.train.data import PACK_WINDOW, build_examples, rows_from_examples
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


def check_inputs(cfg: SFTConfig) -> None:
    """Inputs and output paths, before any cluster starts (selfdebug/errors.py)."""
    from selfdebug.dataset import check_synthesis_outputs
    from selfdebug.errors import check_output_dir

    if cfg.storage_is_local:
        check_output_dir(cfg.storage_path.removeprefix("file://"), "storage_path")
        check_output_dir(cfg.resolved_output_dir(), "out_dir")
        check_output_dir(cfg.resolved_log_dir(), "log_dir")
    else:
        for key in ("out_dir", "log_dir"):
            check_output_dir(getattr(cfg, key), key)
    if cfg.data_dirs:
        check_synthesis_outputs(cfg.data_dirs)
    else:  # the fixture dataset, made from an MBPP file
        from selfdebug.errors import InputNotFound
        from selfdebug.train.fixture_data import default_mbpp_path

        mbpp = Path(cfg.mbpp_path) if cfg.mbpp_path else default_mbpp_path()
        if mbpp is None or not mbpp.is_file():
            raise InputNotFound(f"data_dirs is empty and the fixture dataset's MBPP file "
                                f"{mbpp or '../shared/data/mbpp.jsonl'} does not exist",
                                "set data_dirs to synthesis outputs, or mbpp_path / "
                                "SELFDEBUG_SHARED_DATA")


def export_model(checkpoint_model: Path, out: Path) -> None:
    """Copy the exported model to ``out`` whole or not at all: a copy beside it, renamed
    over the old one only once complete (a full disk leaves the previous model in place)."""
    from selfdebug.errors import OutputError

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(checkpoint_model, tmp)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"could not write the final model to {out} ({e})",
                          f"the trained model is kept in the checkpoint {checkpoint_model}; "
                          "free space and re-run the same command (no step is trained "
                          "again)") from e
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


# What a checkpoint must share with the run that resumes it: restoring one trained on
# another model or other data would silently continue the wrong run.
RUN_STAMP = "run_config.json"
RESUME_KEYS = ("model", "data_dirs", "seed", "lr", "epochs", "max_steps", "global_batch_size",
               "micro_batch_size", "max_seq_len", "packing", "lora_r", "mix_weights",
               "mix_caps", "val_fraction", "fixture_problems", "mbpp_path")


def _resume_identity(cfg: SFTConfig) -> dict:
    files = {str(p): [p.stat().st_size, p.stat().st_mtime_ns]
             for d in cfg.data_dirs if "://" not in d
             for p in sorted(Path(d).rglob("*")) if p.is_file()}
    ident = {**{k: getattr(cfg, k) for k in RESUME_KEYS}, "data_files": files}
    return json.loads(json.dumps(ident, default=str))


def check_resume(cfg: SFTConfig) -> None:
    """Refuse to resume checkpoints in ``cfg.run_dir`` that another config wrote (ValueError
    naming what differs); otherwise record this run's identity there."""
    if not cfg.storage_is_local:
        return
    run_dir, ident = Path(cfg.run_dir), _resume_identity(cfg)
    stamp = run_dir / RUN_STAMP
    if stamp.is_file() and any(run_dir.glob("checkpoint_*")):
        old = json.loads(stamp.read_text())
        diff = sorted(k for k in set(old) | set(ident) if old.get(k) != ident.get(k))
        if diff:
            why = " (the data was rewritten since)" if "data_files" in diff else ""
            raise ValueError(
                f"{run_dir} holds checkpoints of a run with another {', '.join(diff)}{why}; "
                "this run would resume from them: pick another name or storage_path, or "
                f"delete {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(ident, indent=1) + "\n")


def run(cfg: SFTConfig, resident=None) -> dict:
    """Train, then copy the final model to ``out_dir``; returns a summary. ``resident``: a
    `train.resident.ResidentTrainer` that trains instead of a new Ray Train run (it writes
    ``out_dir`` itself)."""
    from selfdebug.config import resolve_model
    from selfdebug.errors import note_log
    from selfdebug.progress import Watchdog
    from selfdebug.ray_utils import init_ray
    from selfdebug.resources import describe, fit_to_cluster, sft_holders

    check_inputs(cfg)  # first: nothing built, loaded or started for a bad path
    cfg = _absolute(replace(cfg, model=resolve_model(cfg.model)))
    note_log("sft", cfg.resolved_log_dir())
    init_ray(cfg.ray_address or None)
    holders = sft_holders(cfg)
    if resident is None:  # a joined cluster may be small (a resident trainer holds its CPUs)
        cfg, holders = fit_to_cluster(cfg, holders)
    check_resume(cfg)
    metrics = cfg.resolved_log_dir() / "metrics.jsonl"
    out = cfg.resolved_output_dir()
    ray_data = cfg.ingest == "ray_data" and resident is None  # a resident reads the files
    with Watchdog("sft", cfg.stall_timeout_s, ray_data=ray_data, declared=describe(holders),
                  probe=lambda: metrics.stat().st_size if metrics.exists() else 0):
        if resident is not None:
            resident.fit(cfg)
        else:
            result = build_trainer(cfg).fit()
    if resident is not None:
        from selfdebug.train.checkpoint import latest_local

        report = json.loads((cfg.resolved_log_dir() / "sft_report.json").read_text())
        return {"out_dir": str(out), "checkpoint": str(latest_local(Path(cfg.run_dir))),
                "log_dir": str(cfg.resolved_log_dir()), **report["summary"]}
    if result.error is not None:  # older Ray versions return instead of raising
        raise result.error
    with result.checkpoint.as_directory() as d:
        export_model(Path(d) / "model", out)
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
        # (other failures are reported by selfdebug.errors.run_command)
        return report_expected("selfdebug sft", e)
    print(json.dumps(summary, indent=2, default=str))
    if summary.get("error"):  # --dry-run: the plan is printed, and what a run would refuse
        print(f"selfdebug sft: {summary['error']}", file=sys.stderr)
        return 2
    return 0
