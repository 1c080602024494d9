"""The SFT loop without Ray (torchrun / one process), LoRA merged on export; the configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from selfdebug.config import load_config
from selfdebug.train.config import SFTConfig

CONFIGS = Path(__file__).resolve().parents[1] / "jobs" / "configs"


@pytest.mark.parametrize("name,world", [("sft-cpu", 2), ("sft-1gpu", 1), ("sft-cluster", 8),
                                        ("sft-paper", 8)])
def test_configs_load(name, world):
    cfg = load_config(SFTConfig, CONFIGS / f"{name}.yaml")
    cfg.validate()
    assert cfg.num_workers == world
    if cfg.use_gpu:  # paper settings on GPUs
        assert (cfg.epochs, cfg.global_batch_size, cfg.lr, cfg.warmup_steps) == (2, 128, 2e-5, 500)
        assert cfg.precision == "bf16" and cfg.zero_stage in (2, 3)
    if name == "sft-paper":  # LeDex: AdamW defaults, no hold-out, one refinement per sample
        assert cfg.val_fraction == 0.0 and cfg.one_refinement_per_sample
        assert cfg.adam_betas == [0.9, 0.999] and cfg.weight_decay == 0.0


_SCRIPT = """
import json, sys
from selfdebug.train.loop import train_loop
print("SUMMARY", json.dumps(train_loop(json.loads(sys.argv[1]))))
"""


@pytest.mark.timeout(240)
def test_loop_without_ray_lora_export(tiny_model_dir, shared_data, tmp_path):
    """A single process, as under torchrun: local data, local checkpoints, merged LoRA."""
    cfg = load_config(SFTConfig, CONFIGS / "sft-cpu.yaml", [
        f"storage_path={tmp_path}", f"model={tiny_model_dir}", "name=local",
        f"mbpp_path={shared_data / 'mbpp.jsonl'}", "fixture_problems=8", "max_seq_len=384",
        "val_fraction=0.3", "global_batch_size=2", "max_steps=3", "checkpoint_every=2",
        "eval_every=3", "lora_r=4", "lora_alpha=8", "lora_dropout=0.0", "lr=0.01",
        "warmup_steps=1", "num_workers=1", "cpus_per_worker=2", "zero_stage=2"])
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": "29531"}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(asdict(cfg))],
                          capture_output=True, text=True, timeout=220, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    summary = json.loads(proc.stdout.split("SUMMARY", 1)[1])
    assert summary["step"] == 3 and summary["resumed_at"] == 0
    run_dir = tmp_path / "local"
    assert sorted(p.name for p in run_dir.glob("checkpoint_*")) == [
        "checkpoint_0000002", "checkpoint_0000003"]
    assert (run_dir / "logs" / "sft_report.md").is_file()
    # every start of the loop is logged; the report counts restarts (none here)
    attempts = [json.loads(x) for x in (run_dir / "logs" / "attempts.jsonl").read_text().splitlines()]
    assert [a["resumed_at"] for a in attempts] == [0]
    report = json.loads((run_dir / "logs" / "sft_report.json").read_text())
    assert report["summary"]["restarts"] == 0

    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = cfg.resolved_output_dir()
    weights = load_file(str(out / "model.safetensors"))
    assert not any("lora" in k for k in weights)  # merged: a plain model
    merged = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    q_merged = merged.model.layers[0].self_attn.q_proj.weight
    q_base = base.model.layers[0].self_attn.q_proj.weight
    assert not torch.allclose(q_merged, q_base)  # the adapter's update is in the weights
    ids = torch.tensor([[0, 5, 6, 7]])
    assert merged.generate(ids, max_new_tokens=4, do_sample=False).shape[1] == 8


def test_checkpoints_of_another_config_are_not_resumed(tmp_path):
    """A rerun with the same name and storage resumes; one with another model or rewritten
    data would silently continue the wrong run, so it is refused naming what differs."""
    from selfdebug.train.cli import check_resume
    from selfdebug.train.config import SFTConfig

    data = tmp_path / "data" / "examples"
    data.mkdir(parents=True)
    (data / "part-0.parquet").write_bytes(b"x")
    cfg = SFTConfig(name="r", model="/models/a", data_dirs=[str(tmp_path / "data")],
                    storage_path=str(tmp_path / "sft"))
    check_resume(cfg)  # fresh: records the identity
    (tmp_path / "sft" / "r" / "checkpoint_000001").mkdir()
    check_resume(cfg)  # the same config: resumes
    with pytest.raises(ValueError, match="another model.*delete"):
        check_resume(SFTConfig(**{**cfg.__dict__, "model": "/models/b"}))
    os.utime(data / "part-0.parquet", ns=(1, 1))  # the data rewritten since
    with pytest.raises(ValueError, match="data_files"):
        check_resume(cfg)
