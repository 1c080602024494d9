"""The engine layer (`llm.engine_pool.EnginePool`) on a real local Ray cluster with vLLM on
CPU: plain callers (driver, sync and async Ray actors), logprobs against transformers,
weights reloaded in place (also after a replica restart), and the Ray Data stage shared
by two operators. One engine start for the module (plus one restart)."""

from __future__ import annotations

import json

import pytest

from selfdebug.llm.config import EngineConfig, SamplingConfig
from selfdebug.llm.engine_pool import (
    REFINE_PRIORITY,
    SAMPLE_PRIORITY,
    EnginePool,
    GenerationRequest,
    request_from_row,
)
from selfdebug.llm.prompts import generate_messages

PROMPTS = ["def add(a, b):\n", "def is_even(n):\n    return", "# reverse a string\ndef rev(s):"]
GREEDY = {"temperature": 0.0, "max_tokens": 12}


def test_request_from_row_picks_messages_then_prompt():
    r = request_from_row({"messages": "[]", "prompt": "problem text"}, {"n": 2}, 0)
    assert r.messages == "[]" and r.prompt is None and r.num_samples() == 2
    assert request_from_row({"prompt": "p"}, {}, 1).prompt == "p"
    with pytest.raises(ValueError, match="sample_index"):
        request_from_row({"prompt": "p", "sample_index": 0}, {}, 1)
    with pytest.raises(ValueError, match="neither"):
        request_from_row({"prompt": ""}, {}, 1)


@pytest.fixture(scope="module")
def pool(ray_cluster, tiny_model_dir):
    # float32: vLLM on CPU would run bfloat16, whose greedy choices differ from
    # transformers' float32 ones on near ties.
    eng = EngineConfig(model=str(tiny_model_dir), max_model_len=512, batch_size=4,
                       dtype="float32")
    p = EnginePool.start(eng, name="test")
    p.wait_ready(timeout_s=300)
    yield p
    p.shutdown()


def _hf_model(path):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _hf_greedy(model, prompt_ids: list[int], max_new: int) -> list[int]:
    import torch

    with torch.no_grad():
        ids = torch.tensor([prompt_ids])  # explicit mask: BOS must not be taken for padding
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                             min_new_tokens=max_new, do_sample=False)
    return out[0, len(prompt_ids):].tolist()


def _greedy(pool) -> list:
    return [c for [c] in pool.generate([GenerationRequest(prompt=p, sampling=GREEDY)
                                        for p in PROMPTS])]


@pytest.mark.ray
@pytest.mark.vllm
@pytest.mark.timeout(300)
def test_plain_callers_and_logprobs_match_transformers(pool, tiny_model_dir):
    import ray
    import torch

    # Driver: n seeded samples, chat messages rendered by the engine, per-request errors.
    reqs = [GenerationRequest(messages=generate_messages("def f(x):\n"), logprobs=True,
                              sampling={"n": 3, "temperature": 1.0, "max_tokens": 8, "seed": 5}),
            GenerationRequest(prompt="a b c " * 400, sampling={"max_tokens": 4}),  # too long
            GenerationRequest(messages="not json", sampling={"n": 2})]
    samples, [long], bad = pool.generate(reqs)
    assert len(samples) == 3 and all(not c.error and 0 < len(c.token_ids) <= 8 for c in samples)
    assert len({tuple(c.token_ids) for c in samples}) > 1  # own seeds
    assert long.error and bad[0].error and len(bad) == 2
    again = pool.generate(reqs[:1])[0]  # same seed, same samples
    assert [c.token_ids for c in again] == [c.token_ids for c in samples]

    # Logprobs of the sampled tokens equal transformers' log-softmax of the raw logits.
    model = _hf_model(tiny_model_dir)
    for c in samples:
        ids = torch.tensor([c.prompt_token_ids + c.token_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, len(c.prompt_token_ids) - 1:-1]
        ref = torch.log_softmax(logits.float(), -1).gather(
            1, torch.tensor(c.token_ids)[:, None])[:, 0]
        assert len(c.logprobs) == len(c.token_ids)
        assert torch.allclose(torch.tensor(c.logprobs), ref, atol=2e-3), (c.logprobs, ref)

    # Plain Ray actors (no Ray Data): a sync one (an RL learner) and an async one (Serve).
    @ray.remote(num_cpus=0.1)
    class Learner:
        def run(self, p):
            return [c.text for [c] in p.generate([GenerationRequest(prompt=x, sampling=GREEDY)
                                                  for x in PROMPTS])]

    @ray.remote(num_cpus=0.1)
    class Replica:
        async def run(self, p):
            out = await p.agenerate([GenerationRequest(prompt=x, sampling=GREEDY)
                                     for x in PROMPTS])
            return [c.text for [c] in out]

    expected = [c.text for c in _greedy(pool)]
    assert ray.get(Learner.remote().run.remote(pool), timeout=120) == expected
    assert ray.get(Replica.remote().run.remote(pool), timeout=120) == expected
    with pytest.raises(RuntimeError, match="sleep mode"):
        pool.sleep()
    pool.reset_prefix_cache()


@pytest.mark.ray
@pytest.mark.vllm
@pytest.mark.timeout(420)
def test_reload_weights_in_place_and_after_restart(pool, tiny_model_dir, tmp_path):
    import ray
    import torch

    model = _hf_model(tiny_model_dir)
    before = _greedy(pool)
    for c in before:  # the engine runs the original weights
        assert c.token_ids == _hf_greedy(model, c.prompt_token_ids, len(c.token_ids))

    original = tmp_path / "original"
    model.save_pretrained(original)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * p.float().std().clamp(min=0.02))
    pool.reload_weights(model.state_dict())  # through the object store
    after = _greedy(pool)
    assert [c.token_ids for c in after] != [c.token_ids for c in before]
    for c in after:
        assert c.token_ids == _hf_greedy(model, c.prompt_token_ids, len(c.token_ids))

    # A replica killed mid-call: Ray restarts it, it reloads its last weights and the
    # call runs again (nothing lost, no silent fallback to the original weights).
    reqs = [GenerationRequest(prompt=f"def g{i}(x):\n", sampling={
        "max_tokens": 32, "temperature": 1.0, "seed": i, "ignore_eos": True}) for i in range(32)]
    ref = pool.actors[0].generate.remote(reqs)
    import time

    time.sleep(0.5)
    ray.kill(pool.actors[0], no_restart=False)
    results = ray.get(ref, timeout=300)
    assert [(c.error, len(c.token_ids)) for [c] in results] == [("", 32)] * 32
    assert [c.token_ids for c in _greedy(pool)] == [c.token_ids for c in after]

    pool.reload_weights(original)  # a save_pretrained directory
    assert [c.token_ids for c in _greedy(pool)] == [c.token_ids for c in before]
    with pytest.raises(FileNotFoundError, match="weight files"):
        pool.reload_weights(tmp_path)


@pytest.mark.ray
@pytest.mark.vllm
@pytest.mark.timeout(300)
def test_ray_data_stage_shared_by_two_operators(pool):
    """One engine serves two Ray Data operators at once (synth's sampling and refinement);
    rows keep their columns, a too-long prompt or bad messages are error rows."""
    import ray

    sample = pool.ray_data_stage(SamplingConfig(n=2, max_tokens=16, seed=3),
                                 priority=SAMPLE_PRIORITY)
    refine = pool.ray_data_stage(SamplingConfig(n=1, max_tokens=16, seed=4),
                                 priority=REFINE_PRIORITY)
    rows = [{"id": i, "stage": "s", "prompt": f"def f{i}(x):\n", "extra": "kept"}
            for i in range(6)]
    rows.append({"id": 99, "stage": "s", "prompt": "a b c d " * 800, "extra": "kept"})
    # messages: rendered by the engine; "prompt" is then just another column (problem text)
    fixes = [{**r, "stage": "r", "messages": json.dumps(generate_messages(r["prompt"]))}
             for r in rows[:6]]
    fixes.append({"id": 98, "stage": "r", "prompt": "x", "extra": "kept",
                  "messages": "not json"})
    out = sample(ray.data.from_items(rows)).union(refine(ray.data.from_items(fixes))).take_all()
    got = {(r["stage"], r["id"], r["sample_index"]): r for r in out}
    assert set(got) == ({("s", r["id"], k) for r in rows for k in (0, 1)}
                        | {("r", r["id"], 0) for r in fixes})
    for (stage, i, _), r in got.items():
        base = {"id", "stage", "prompt", "extra"} | ({"messages"} if stage == "r" else set())
        assert r["extra"] == "kept" and set(r) == base | {
            "sample_index", "generated_text", "num_generated_tokens", "generation_error"}
        if i in (98, 99):
            assert r["generation_error"] and r["generated_text"] == ""
            assert r["num_generated_tokens"] == 0
        else:
            assert r["generation_error"] == "" and r["generated_text"]
            assert 0 < r["num_generated_tokens"] <= 16
    assert got[("s", 0, 0)]["generated_text"] != got[("s", 0, 1)]["generated_text"]
