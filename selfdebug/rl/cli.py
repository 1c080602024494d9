"""`selfdebug rl --config FILE [key=value ...]`: LeDex's RL stage on Ray.

The driver starts the policy's vLLM engines (`EnginePool`), then the learner: a Ray Train
`TorchTrainer` (``num_workers`` workers, DeepSpeed) running `loop.learner_loop`, or the
same loop in this process with ``use_ray_train=false``. Worker 0 drives rollouts and
rewards (sandbox actors, reward workers) and pushes the weights into the engines after
every update. Re-running with the same ``name`` and ``storage_path`` resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

from selfdebug.config import add_config_arguments, load_job_config
from selfdebug.rl.config import RLConfig


def start_engines(cfg: RLConfig, model_path: str):
    from selfdebug.llm.engine_pool import EnginePool

    pool = EnginePool.start(cfg.engine.for_model(model_path), name=f"rl-{cfg.name}")
    pool.wait_ready()
    return pool


def trainer(cfg: RLConfig, pool, model_path: str):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from selfdebug.rl.loop import learner_loop

    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": cfg.gpus_per_worker} if cfg.use_gpu else {})}
    storage = os.path.abspath(cfg.storage_path) if cfg.storage_is_local else cfg.storage_path
    return TorchTrainer(
        learner_loop,
        train_loop_config={"cfg": cfg, "pool": pool, "model_path": model_path},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=cfg.name, storage_path=storage,
                             failure_config=FailureConfig(max_failures=0),
                             checkpoint_config=CheckpointConfig(
                                 num_to_keep=max(cfg.keep_checkpoints, 1))))


def run(cfg: RLConfig, pool=None) -> dict:
    """Train; returns a summary. ``pool``: engines already started for this model (tests,
    benchmarks), else started and shut down here."""
    from selfdebug.config import resolve_model
    from selfdebug.progress import Watchdog
    from selfdebug.ray_utils import init_ray
    from selfdebug.resources import describe, fit_to_cluster, rl_holders
    from selfdebug.rl.loop import learner_loop

    cfg = replace(cfg, **{k: str(Path(v).resolve()) for k in ("log_dir", "out_dir")
                          if (v := getattr(cfg, k)) and "://" not in v})
    if cfg.storage_is_local:  # workers run in other directories
        cfg = replace(cfg, storage_path=os.path.abspath(cfg.storage_path.removeprefix("file://")))
    cfg = replace(cfg, data_dirs=[str(Path(d).resolve()) if "://" not in d else d
                                  for d in cfg.data_dirs])
    from selfdebug.synth.config import resolve_source

    cfg = replace(cfg, source=resolve_source(cfg.source))  # workers run elsewhere
    model_path = resolve_model(cfg.model)
    init_ray(cfg.ray_address or None)
    # A joined cluster may be small (a 2-CPU head): every actor here lives for the whole
    # run and none runs Ray Data, so they may take all of the cluster's CPUs between them.
    cfg, holders = fit_to_cluster(cfg, rl_holders(cfg), share=1.0)
    metrics = cfg.resolved_log_dir() / "metrics.jsonl"
    own_pool = pool is None
    try:
        with Watchdog("rl", cfg.stall_timeout_s, declared=describe(holders),
                      probe=lambda: metrics.stat().st_size if metrics.exists() else 0):
            pool = pool or start_engines(cfg, model_path)
            if not cfg.use_ray_train:
                summary = learner_loop({"cfg": cfg, "pool": pool, "model_path": model_path})
            else:
                result = trainer(cfg, pool, model_path).fit()
        if cfg.use_ray_train:
            if result.error is not None:
                raise result.error
            with result.checkpoint.as_directory() as d:
                shutil.copytree(Path(d) / "model", cfg.resolved_output_dir(),
                                dirs_exist_ok=True)
            summary = {"checkpoint": result.checkpoint.path}
    finally:
        if own_pool and pool is not None:
            pool.shutdown()
    log_dir = cfg.resolved_log_dir()
    report = log_dir / "rl_report.json"
    if report.exists():
        summary.update(json.loads(report.read_text())["summary"])
    return {"output_dir": str(cfg.resolved_output_dir()), "log_dir": str(log_dir), **summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="selfdebug rl", description=__doc__.split("\n")[0])
    add_config_arguments(parser, "jobs/configs/rl-*.yaml")
    args = parser.parse_args(argv)
    cfg = load_job_config(RLConfig, args.config, args.overrides, "selfdebug rl")
    if cfg is None:
        return 2
    print(json.dumps(run(cfg), indent=2, default=str))
    return 0
