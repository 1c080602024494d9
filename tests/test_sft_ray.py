"""Two-worker Ray Train SFT on CPU: it learns, a killed run resumes exactly, the export loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from selfdebug.config import load_config
from selfdebug.train.config import SFTConfig
from selfdebug.train.metrics import read_metrics

pytestmark = pytest.mark.ray

STEPS, CKPT = 8, 4  # a batch of 8 examples ≈ 2 workers × 1 row × 3 accumulation; 6 steps an epoch
CPU_CONFIG = Path(__file__).resolve().parents[1] / "jobs" / "configs" / "sft-cpu.yaml"


def _cfg(tmp, tiny_model_dir, shared_data, name, *extra):
    return load_config(SFTConfig, CPU_CONFIG, [
        f"name={name}", f"storage_path={tmp}", f"model={tiny_model_dir}",
        f"mbpp_path={shared_data / 'mbpp.jsonl'}", "fixture_problems=16", "max_seq_len=512",
        "val_fraction=0.25", "global_batch_size=8", f"max_steps={STEPS}", "lr=0.003",
        "warmup_steps=2", f"checkpoint_every={CKPT}", f"eval_every={CKPT}", *extra])


@pytest.fixture(scope="module")
def runs(ray_cluster, tiny_model_dir, shared_data, tmp_path_factory):
    """An uninterrupted run, and a run killed after its first checkpoint then re-run."""
    from selfdebug.train.cli import run

    tmp = tmp_path_factory.mktemp("sft-runs")
    whole = _cfg(tmp, tiny_model_dir, shared_data, "whole")
    summary = run(whole)
    killed = _cfg(tmp, tiny_model_dir, shared_data, "killed", f"fail_after_step={CKPT}")
    with pytest.raises(Exception, match="fail_after_step"):
        run(killed)
    after_kill = read_metrics(killed.resolved_log_dir())
    resumed = run(killed)  # the same command again: it resumes from the checkpoint
    return {"whole": whole, "summary": summary, "killed": killed, "after_kill": after_kill,
            "resumed": resumed}


@pytest.mark.timeout(420)  # includes the three runs of the fixture
def test_two_workers_reduce_validation_loss(runs):
    s = runs["summary"]
    assert s["world_size"] == 2 and s["steps"] == STEPS
    assert s["last_val_loss"] < s["first_val_loss"] - 0.05
    log_dir = runs["whole"].resolved_log_dir()
    for f in ("loss_curve.png", "sft_report.md", "sft_report.json", "metrics.jsonl"):
        assert (log_dir / f).is_file()
    assert list((log_dir / "tensorboard").glob("events.out.tfevents.*"))
    rec = [r for r in read_metrics(log_dir) if r["split"] == "train"]
    assert [r["step"] for r in rec] == list(range(1, STEPS + 1))
    assert all(r["tokens_per_s"] > 0 and r["grad_norm"] > 0 and r["lr"] > 0 for r in rec)


@pytest.mark.timeout(300)
def test_killed_run_resumes_on_the_same_trajectory(runs):
    killed_log = runs["killed"].resolved_log_dir()
    assert max(r["step"] for r in runs["after_kill"]) == CKPT  # died right after checkpoint
    whole = {r["step"]: r for r in read_metrics(runs["whole"].resolved_log_dir())
             if r["split"] == "train"}
    resumed = {r["step"]: r for r in read_metrics(killed_log) if r["split"] == "train"}
    assert sorted(resumed) == list(range(1, STEPS + 1))  # the step counter continued
    assert resumed[STEPS]["epoch"] == 1  # ... across an epoch boundary
    for step in range(1, STEPS + 1):  # same data position, optimizer and LR schedule
        a, b = whole[step], resumed[step]
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5), step
        assert b["lr"] == pytest.approx(a["lr"], rel=1e-9), step
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4), step
    state = json.loads((runs["killed"].resolved_output_dir().parent
                        / f"checkpoint_{STEPS:07d}" / "trainer_state.json").read_text())
    assert state["step"] == STEPS and state["finished"]
    assert runs["resumed"]["last_val_loss"] == pytest.approx(
        runs["summary"]["last_val_loss"], abs=1e-5)


@pytest.mark.timeout(120)
def test_export_loads_in_transformers(runs):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = runs["whole"].resolved_output_dir()
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Write add(a, b)."}],
                                     tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        gen = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert gen.shape[1] > ids.shape[1]


_VLLM_SCRIPT = textwrap.dedent("""
    import sys

    if __name__ == "__main__":
        from vllm import LLM, SamplingParams

        llm = LLM(model=sys.argv[1], max_model_len=512, gpu_memory_utilization=0.05,
                  enforce_eager=True, dtype="float32")
        out = llm.generate(["<|user|>\\nWrite add(a, b).<|end|>\\n<|assistant|>\\n"],
                           SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True))
        print("VLLM_TOKENS", len(out[0].outputs[0].token_ids))
""")


@pytest.mark.vllm
@pytest.mark.timeout(240)
def test_export_loads_in_vllm(runs, tmp_path):
    pytest.importorskip("vllm")
    script = tmp_path / "gen.py"
    script.write_text(_VLLM_SCRIPT)
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="nobind")
    proc = subprocess.run([sys.executable, str(script), str(runs["whole"].resolved_output_dir())],
                          capture_output=True, text=True, timeout=220, env=env)
    assert "VLLM_TOKENS 8" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]
