"""The shared training engine: per-token log-probabilities, the value model, a frozen
reference engine, the SFT schedule in examples, and the guards on private library APIs."""

from __future__ import annotations

import inspect
import os

import pytest
import torch
import torch.nn.functional as F

from selfdebug.metadata import version_in
from selfdebug.train.config import SFTConfig
from selfdebug.train.engine import (
    DEEPSPEED_SHM_PATCH_VERSIONS,
    answer_mask,
    build_model,
    build_value_model,
    sequence_nll,
    token_logprobs,
    token_values,
)
from selfdebug.train.packing import collate, join
from selfdebug.train.schedule import plan_schedule


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    torch.manual_seed(0)
    return build_model(str(tiny_model_dir), dtype=torch.float32).eval()


def test_token_logprobs_match_transformers_loss(model):
    ids = torch.randint(3, 200, (2, 12))
    with torch.no_grad():
        lp = token_logprobs(model, ids)
        logits = model(input_ids=ids).logits
    assert lp.shape == (2, 11) and lp.dtype == torch.float32 and (lp <= 0).all()
    ref = -F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1),
                           reduction="none").view(2, 11)
    torch.testing.assert_close(lp, ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # temperature divides the logits before the softmax
        hot = token_logprobs(model, ids, temperature=2.0)
    ref_hot = torch.log_softmax(logits[:, :-1] / 2.0, -1).gather(-1, ids[:, 1:, None])[..., 0]
    torch.testing.assert_close(hot, ref_hot, atol=1e-5, rtol=1e-5)


def test_packed_rows_score_each_sequence_alone(model):
    """Two sequences packed in one row get the same log-probs as each on its own row."""
    a = {"example_id": "a", "input_ids": [5, 9, 14, 20, 7], "labels": [-100, -100, 14, 20, 7]}
    b = {"example_id": "b", "input_ids": [6, 11, 3, 40], "labels": [-100, 11, 3, 40]}
    packed = collate([join([a, b])], pad_id=0)
    with torch.no_grad():
        lp = token_logprobs(model, packed["input_ids"], position_ids=packed["position_ids"])
        lp_a = token_logprobs(model, torch.tensor([a["input_ids"]]))
        lp_b = token_logprobs(model, torch.tensor([b["input_ids"]]))
    torch.testing.assert_close(lp[0, :4], lp_a[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lp[0, 5:], lp_b[0], atol=1e-5, rtol=1e-4)
    # the SFT loss is the labelled part of the same numbers
    mask = answer_mask(packed["labels"])
    assert int(mask.sum()) == 3 + 3  # a: 14 20 7; b: 11 3 40 (the boundary is not labelled)
    with torch.no_grad():
        nll = sequence_nll(model, packed, "cpu")
    expected = -(lp_a[0, 1:].sum() + lp_b[0].sum())
    torch.testing.assert_close(nll, expected, atol=1e-4, rtol=1e-4)


def _packed_batch():
    seqs = [[5, 9, 14, 20, 7], [6, 11, 3, 40], [8, 8, 30], [12, 13, 14, 15, 16, 17], [4, 2]]
    ex = [{"example_id": str(i), "input_ids": s, "labels": s} for i, s in enumerate(seqs)]
    # row 0: three sequences (12 tokens); row 1: two sequences (8 tokens) + 4 of padding
    return collate([join(ex[:3]), join(ex[3:])], pad_id=0), seqs


def test_packed_attention_matches_sdpa_and_each_sequence_alone(tiny_model_dir, monkeypatch):
    """sdpa_packed attends within each packed sequence: the logits and gradients of sdpa's
    block-diagonal mask, and of each sequence run on its own."""
    from selfdebug.train import attention

    cuts = []
    real = attention.segment_lengths
    monkeypatch.setattr(attention, "segment_lengths", lambda p: cuts.append(real(p)) or cuts[-1])
    batch, seqs = _packed_batch()
    out = {}
    for impl in ("sdpa", "sdpa_packed"):
        torch.manual_seed(0)
        m = build_model(str(tiny_model_dir), dtype=torch.float32, attn_implementation=impl)
        logits = m(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        logits[batch["labels"] != -100].logsumexp(-1).sum().backward()
        out[impl] = (logits.detach(), m.model.layers[0].self_attn.q_proj.weight.grad,
                     m)
    (ref, ref_grad, _), (got, got_grad, packed) = out["sdpa"], out["sdpa_packed"]
    assert cuts and cuts[0] == [[5, 4, 3], [6, 2, 4]]  # padding is a segment of its own
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_grad, ref_grad, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        alone = packed(input_ids=torch.tensor([seqs[1]])).logits[0]
    torch.testing.assert_close(got[0, 5:9], alone, atol=1e-5, rtol=1e-5)


def test_packed_attention_leaves_padded_batches_and_decoding_to_sdpa(tiny_model_dir):
    ids = torch.tensor([[5, 9, 14, 20, 7], [0, 0, 6, 11, 3]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    models = {impl: build_model(str(tiny_model_dir), dtype=torch.float32,
                                attn_implementation=impl).eval()
              for impl in ("sdpa", "sdpa_packed")}
    with torch.no_grad():
        ref, got = (models[i](input_ids=ids, attention_mask=mask).logits for i in models)
    torch.testing.assert_close(got[mask.bool()], ref[mask.bool()], atol=1e-5, rtol=1e-5)
    for m in models.values():
        m.config.use_cache = True
    with torch.no_grad():
        a, b = (models[i].generate(ids[:1], max_new_tokens=6, do_sample=False)
                for i in models)
    assert torch.equal(a, b)


def test_unknown_attention_is_named():
    with pytest.raises(ValueError, match="attn_implementation 'flash'.*sdpa_packed"):
        SFTConfig(attn_implementation="flash").validate()


def test_value_model_gives_one_value_per_token(tiny_model_dir):
    critic = build_value_model(str(tiny_model_dir), dtype=torch.float32)
    ids = torch.randint(3, 200, (3, 7))
    values = token_values(critic, ids, attention_mask=torch.ones_like(ids))
    assert values.shape == (3, 7) and values.requires_grad
    values.sum().backward()  # trainable: the head gets a gradient
    assert any(p.grad is not None for p in critic.parameters())


_ENV = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29541"}


@pytest.mark.timeout(180)
def test_deepspeed_policy_and_frozen_reference(tiny_model_dir):
    """One process: a trained policy engine and a frozen reference engine (ZeRO-2, gloo);
    after a step the policy's log-probs move, the reference's do not."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import torch
        from selfdebug.train.engine import *
        rank, world, device = setup_distributed(cpus_per_worker=1)
        cfg = ds_config(micro_batch_size=1, grad_accum=1, world=world, zero_stage=2,
                        bf16=False)
        torch.manual_seed(0)
        policy, opt, sched = initialize(
            build_model({str(tiny_model_dir)!r}, dtype=torch.float32), cfg,
            OptimSpec(lr=1e-2, total_steps=10, warmup_steps=1))
        ref, none_opt, _ = initialize(build_model({str(tiny_model_dir)!r},
                                                  dtype=torch.float32), cfg, None)
        assert none_opt is None and not any(p.requires_grad for p in ref.module.parameters())
        ids = torch.randint(3, 200, (1, 10))
        with torch.no_grad():
            before, ref_before = token_logprobs(policy, ids), token_logprobs(ref, ids)
        loss = -token_logprobs(policy, ids).sum()
        policy.backward(loss)
        policy.step()
        with torch.no_grad():
            after, ref_after = token_logprobs(policy, ids), token_logprobs(ref, ids)
        assert after.sum() > before.sum(), (before.sum(), after.sum())
        assert torch.equal(ref_before, ref_after)
        print("ENGINE_OK")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=170, env={**os.environ, **_ENV})
    assert "ENGINE_OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_schedule_counts_examples_not_rows():
    cfg = SFTConfig(global_batch_size=128, micro_batch_size=4, epochs=2, warmup_steps=500)
    # 40,000 examples packed 4 to a row: a batch of 128 examples is 32 rows
    s = plan_schedule(cfg, world=1, examples=40_000, rows=10_000, tokens=20_000_000)
    assert s.grad_accum == 8 and s.examples_per_step == pytest.approx(128)
    assert s.steps_per_epoch == 312 and s.total_steps == 624
    assert s.tokens_per_step == pytest.approx(64_000)
    assert s.warmup_fraction == pytest.approx(500 / 624)


def test_warmup_longer_than_the_run_names_both_numbers():
    cfg = SFTConfig(global_batch_size=128, micro_batch_size=4, epochs=2, warmup_steps=500)
    with pytest.raises(ValueError, match=r"warmup_steps 500 ≥ total optimizer steps 156\b"):
        plan_schedule(cfg, world=1, examples=10_000, rows=2_500, tokens=1)


def test_deepspeed_private_patch_still_applies():
    """``build_shm_op`` is DeepSpeed-private: when this fails, DeepSpeed moved out of the
    checked range; re-check that the op is still built where we skip it, then widen it."""
    import deepspeed

    assert version_in(deepspeed.__version__, DEEPSPEED_SHM_PATCH_VERSIONS), (
        f"DeepSpeed {deepspeed.__version__} is outside {DEEPSPEED_SHM_PATCH_VERSIONS}: "
        "re-check selfdebug.train.engine.skip_deepspeed_shm_build")
    import importlib
    import sys

    importlib.import_module("deepspeed.comm.torch")
    mod = sys.modules["deepspeed.comm.torch"]
    assert "build_shm_op()" in inspect.getsource(mod.TorchBackend.__init__)


def test_ray_private_api_guard_still_applies():
    """`ray_utils.shutdown_ray` kills the autoscaler monitor through Ray's private node
    object, on the Ray versions in RAY_PRIVATE_API_VERSIONS only."""
    import ray
    import ray._private.node as node

    from selfdebug.ray_utils import RAY_PRIVATE_API_VERSIONS

    assert version_in(ray.__version__, RAY_PRIVATE_API_VERSIONS), (
        f"Ray {ray.__version__} is outside {RAY_PRIVATE_API_VERSIONS}: re-check "
        "selfdebug.ray_utils.shutdown_ray")
    params = inspect.signature(node.Node._kill_process_type).parameters
    assert "check_alive" in params and hasattr(ray._private.worker, "_global_node")


def test_dry_run_plans_without_training(tiny_model_dir, shared_data, capsys):
    import json
    from pathlib import Path

    from selfdebug.train.cli import main

    config = Path(__file__).resolve().parents[1] / "jobs" / "configs" / "sft-cpu.yaml"
    common = ["--config", str(config), "--dry-run", f"model={tiny_model_dir}",
              f"mbpp_path={shared_data / 'mbpp.jsonl'}", "fixture_problems=12"]
    assert main(common) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["examples_by_kind"]["refine"] == 2 * plan["examples_by_kind"]["explain_refine"]
    assert plan["total_steps"] == plan["steps_per_epoch"] * 2 > 0
    assert plan["tokens_per_step"] > 0 and 0 < plan["warmup_fraction"] < 1
    assert main(common + ["warmup_steps=400"]) == 2
    err = capsys.readouterr().err
    assert f"warmup_steps 400 ≥ total optimizer steps {plan['total_steps']}" in err
