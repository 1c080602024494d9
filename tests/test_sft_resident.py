"""A resident trainer trains SFT configs one after another in one process, exactly as a Ray
Train run of the same config does; what it cannot run, or what fails, is said plainly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from selfdebug.config import load_config
from selfdebug.train.config import SFTConfig
from selfdebug.train.metrics import read_metrics

pytestmark = pytest.mark.ray

CPU_CONFIG = Path(__file__).resolve().parents[1] / "jobs" / "configs" / "sft-cpu.yaml"


def _cfg(tmp, tiny_model_dir, shared_data, name, *extra):
    return load_config(SFTConfig, CPU_CONFIG, [
        f"name={name}", f"storage_path={tmp}", f"model={tiny_model_dir}",
        f"mbpp_path={shared_data / 'mbpp.jsonl'}", "fixture_problems=16", "max_seq_len=512",
        "val_fraction=0.25", "global_batch_size=8", "max_steps=4", "lr=0.003",
        "warmup_steps=1", "num_workers=1", "cpus_per_worker=1", *extra])


def _train_losses(cfg) -> list[float]:
    return [r["loss"] for r in read_metrics(cfg.resolved_log_dir()) if r["split"] == "train"]


def _weights(model_dir: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


@pytest.mark.timeout(300)
def test_resident_trainer_trains_as_ray_train_does(ray_cluster, tiny_model_dir, shared_data,
                                                   tmp_path):
    import ray
    import torch

    from selfdebug.train.cli import run
    from selfdebug.train.resident import ResidentTrainer

    def cfg(name, *extra):
        return _cfg(tmp_path, tiny_model_dir, shared_data, name, *extra)

    by_ray_train = run(cfg("ray-train"))
    resident = ResidentTrainer(cpus=1)
    pid = ray.get(resident.actor.__ray_call__.remote(lambda self: os.getpid()))
    try:
        first = run(cfg("first"), resident)
        # a config the loop refuses fails in the caller, naming the problem ...
        with pytest.raises(ValueError, match="warmup"):
            run(cfg("refused", "warmup_steps=50"), resident)
        # ... and the same process trains the next one
        second = run(cfg("second", "seed=7"), resident)
        assert ray.get(resident.actor.__ray_call__.remote(lambda self: os.getpid())) == pid
        with pytest.raises(ValueError, match="num_workers=2"):
            run(cfg("two-workers", "num_workers=2"), resident)
    finally:
        resident.shutdown()

    assert first["steps"] == by_ray_train["steps"] == 4
    assert first["tokens"] == by_ray_train["tokens"]
    assert _train_losses(cfg("first")) == _train_losses(cfg("ray-train"))
    a, b = _weights(first["out_dir"]), _weights(by_ray_train["out_dir"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert Path(first["checkpoint"]).name == "checkpoint_0000004"
    # another seed: another order of the same rows, another model, in the same process
    assert second["steps"] == 4 and _train_losses(cfg("second")) != _train_losses(cfg("first"))
    assert (Path(second["log_dir"]) / "sft_report.json").is_file()


@pytest.mark.timeout(120)
def test_a_trainer_the_cluster_cannot_place_fails_naming_it(ray_cluster, tiny_model_dir,
                                                            shared_data, tmp_path):
    from selfdebug.errors import ClusterError
    from selfdebug.train.resident import ResidentTrainer

    trainer = ResidentTrainer(cpus=64, ready_timeout_s=2)  # the test cluster has 6 CPUs
    try:
        with pytest.raises(ClusterError, match="64 CPUs.* did not start within 2 s"):
            trainer.fit(_cfg(tmp_path, tiny_model_dir, shared_data, "unplaced"))
    finally:
        trainer.shutdown()

