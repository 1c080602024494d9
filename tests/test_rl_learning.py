"""RL end to end on a task the tiny model can learn: real vLLM engine (one for the module),
real sandbox actors and reward workers on the session's Ray cluster, DeepSpeed learner.

The task: K problems "return the secret number", the wrong code returns 0 and the
feedback (and the problem's test) shows the number. The "SFT checkpoint" is the tiny model
trained here for a few seconds (plain torch: test scaffolding, not the project's SFT) to
answer in the right format with a *random* digit, so it starts at ≈ 1/10 pass rate and RL
has to learn which digit the problems want.

Every problem wants the same digit: the warm-started 0.8 M-parameter model does not
attend to the one character that tells the problems apart (measured: its digit
distribution was identical for all four prompts, before and after 16 PPO steps), so with a
different digit per problem a context-blind policy could reach at most 1/K, and the
learning tests measured noise.
"""

from __future__ import annotations

import json
import random

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.vllm, pytest.mark.timeout(600)]

SECRETS = [7, 7, 7, 7]


def _answer(d: int) -> str:
    return f"```python\ndef f():\n    return {d}\n```"


def _write_task(root):
    """An MBPP-format problem file and a synthesis-like output (debug records) for it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    problems = root / "secret.jsonl"
    with problems.open("w") as fh:
        for i, c in enumerate(SECRETS):
            fh.write(json.dumps({"task_id": 900 + i, "text": f"Return the secret number {i}.",
                                 "code": f"def f():\n    return {c}\n",
                                 "test_list": [f"assert f() == {c}"],
                                 "test_setup_code": "", "challenge_test_list": []}) + "\n")
    records = [{"task_id": f"Mbpp/{900 + i}", "prompt": "",
                "wrong_code": "def f():\n    return 0\n",
                "feedback": f"`assert f() == {c}` failed: got `0`",
                "refined_code": f"def f():\n    return {c}\n", "correct": True,
                "explanation": "", "refined_feedback": ""} for i, c in enumerate(SECRETS)]
    data = root / "synth"
    (data / "debug").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(records), data / "debug" / "part-0.parquet")
    return problems, data


WARM_RECIPE = 1  # bump when _warm_start changes: the cached warm-start model is rebuilt


def _warm_start(tiny_model_dir, problems_file, out):
    """The format-only "SFT" policy: refine answers with uniformly random digits.

    Cached under .cache/ next to the tiny model (keyed by it and the recipe), built with
    one thread: with two on a loaded 2-core box torch's threads wait on each other and the
    120 steps took 9 min instead of ~30 s."""
    import hashlib
    import os
    import shutil

    import torch

    stamp = hashlib.sha1((tiny_model_dir / "model.safetensors").read_bytes()
                         + f"{SECRETS}/{WARM_RECIPE}".encode()).hexdigest()[:12]
    cached = tiny_model_dir.parent / f"rl-secret-warm-{stamp}"
    if not (cached / "config.json").exists():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
            _train_warm(tiny_model_dir, problems_file, tmp)
            shutil.rmtree(cached, ignore_errors=True)
            os.replace(tmp, cached)
        finally:
            torch.set_num_threads(threads)
    shutil.copytree(cached, out)
    return out


def _train_warm(tiny_model_dir, problems_file, out):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfdebug.llm.prompts import refine_messages
    from selfdebug.problems.load import load_problems
    from selfdebug.train.examples import tokenize_example

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    probs = load_problems(str(problems_file))
    rows = []
    for p, c in zip(probs, SECRETS):
        msgs = refine_messages(p.prompt, "def f():\n    return 0\n",
                               f"`assert f() == {c}` failed: got `0`")
        rows += [tokenize_example(tok, msgs, _answer(d)) for d in range(10)]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(0)
    torch.manual_seed(0)
    for _ in range(120):
        batch = rng.sample(rows, 8)
        L = max(len(i) for i, _ in batch)
        ids = torch.tensor([i + [tok.pad_token_id] * (L - len(i)) for i, _ in batch])
        labels = torch.tensor([lab + [-100] * (L - len(lab)) for _, lab in batch])
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def task(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("rl-task")
    problems, data = _write_task(root)
    warm = _warm_start(tiny_model_dir, problems, root / "warm")
    return {"problems": str(problems), "data": str(data), "model": str(warm), "root": root}


@pytest.fixture(scope="module")
def pool(ray_cluster, task):
    from selfdebug.llm.config import EngineConfig
    from selfdebug.llm.engine_pool import EnginePool

    p = EnginePool.start(EngineConfig(model=task["model"], max_model_len=1024, num_cpus=0.5),
                         name="rl-test")
    p.wait_ready(timeout_s=300)
    yield p
    p.shutdown()


def _cfg(task, name, *overrides):
    from selfdebug.config import load_config
    from selfdebug.rl.config import RLConfig

    base = [f"model={task['model']}", f"source={task['problems']}", "split=",
            f"data_dirs=[{task['data']}]", "modes=[refine]", "reward.embedding_model=",
            "reward.timeout_s=60", "items_per_step=4", "sampling.n=8", "sampling.max_tokens=16",
            "sampling.temperature=1.0", "mini_batch_size=16", "micro_batch_size=16",
            "lr=1.0e-3", "value_lr=2.0e-2", "kl_coef=0.01", "precision=fp32",
            "use_ray_train=false", f"storage_path={task['root'] / 'runs'}", f"name={name}",
            "checkpoint_every=100", "seed=1"]
    return load_config(RLConfig, None, base + list(overrides))


def _rewards(cfg):
    from selfdebug.train.metrics import read_metrics

    return [r["reward_mean"] for r in read_metrics(cfg.resolved_log_dir())
            if r.get("split") == "train"]


def _assert_learns(rewards, steps):
    assert len(rewards) == steps
    q = steps // 4
    first, last = sum(rewards[:q]) / q, sum(rewards[-q:]) / q
    # R(r) is −1.5…−1 for a wrong digit (S_cb ≈ 0.7–0.8) and 5 for the right one: +1 is
    # ≈ 16 points more pass rate. Measured (seed 1, lr 1e-3): ppo −0.84 → 1.72, grpo −0.68 →
    # 2.11; at the old lr 2e-3 both collapsed (the policy lost the answer format).
    assert last > first + 1.0, f"mean reward did not rise: {first:.2f} → {last:.2f} {rewards}"


def _greedy_vllm(pool, prompts):
    from selfdebug.llm.engine_pool import GenerationRequest

    outs = pool.generate([GenerationRequest(messages=m, sampling={"temperature": 0.0,
                                                                   "max_tokens": 16})
                          for m in prompts])
    return [o[0].token_ids for o in outs]


def _greedy_hf(model_dir, pool_prompts_ids):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    out = []
    for ids in pool_prompts_ids:
        x = torch.tensor([ids])
        g = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=16,
                           do_sample=False, pad_token_id=0)
        out.append(g[0, len(ids):].tolist())
    return out


def _prompts(task):
    from selfdebug.llm.prompts import refine_messages
    from selfdebug.problems.load import load_problems

    return [refine_messages(p.prompt, "def f():\n    return 0\n",
                            f"`assert f() == {c}` failed: got `0`")
            for p, c in zip(load_problems(task["problems"]), SECRETS)]


def test_ppo_learns(task, pool):
    from selfdebug.rl.cli import run

    cfg = _cfg(task, "ppo", "estimator=ppo", "steps=16")
    summary = run(cfg, pool=pool)
    assert summary["step"] == 16 and summary["reward_stats"]["rows_failed"] == 0
    _assert_learns(_rewards(cfg), 16)
    report = json.loads((cfg.resolved_log_dir() / "rl_report.json").read_text())
    assert report["summary"]["pass_rate_last_quarter"] > report["summary"]["pass_rate_first_quarter"]
    assert (cfg.resolved_log_dir() / "rl_curves.png").stat().st_size > 0
    rec = [json.loads(x) for x in (cfg.resolved_log_dir() / "metrics.jsonl").open()][-1]
    for key in ("kl", "entropy", "clip_frac", "value_loss", "explained_variance",
                "generation_s", "rewards_s", "learning_s", "weight_sync_s", "pass_rate"):
        assert key in rec, key


def test_grpo_learns_and_engines_hold_the_policy(task, pool):
    """GRPO learns; afterwards the engines' greedy answers are the exported policy's
    (transformers) and differ from the starting policy's: the weights went in place."""
    from transformers import AutoTokenizer

    from selfdebug.llm.prompts import render_prompt
    from selfdebug.rl.cli import run

    prompts = _prompts(task)
    tok = AutoTokenizer.from_pretrained(task["model"])
    ids = [tok(render_prompt(tok, m))["input_ids"] for m in prompts]
    cfg = _cfg(task, "grpo", "estimator=grpo", "steps=16")
    run(cfg, pool=pool)
    _assert_learns(_rewards(cfg), 16)
    engine_now = _greedy_vllm(pool, prompts)
    assert engine_now == _greedy_hf(cfg.resolved_output_dir(), ids)
    assert engine_now != _greedy_hf(task["model"], ids)


def test_kill_and_resume_continues_the_curve(task, pool):
    from selfdebug.rl.cli import run
    from selfdebug.rl.loop import InjectedFailure
    from selfdebug.train.metrics import read_metrics

    cfg = _cfg(task, "resume", "estimator=rloo", "steps=4", "checkpoint_every=1",
               "fail_after_step=2")
    with pytest.raises(InjectedFailure):
        run(cfg, pool=pool)
    assert [r["step"] for r in read_metrics(cfg.resolved_log_dir())] == [1, 2]
    summary = run(cfg, pool=pool)
    assert summary["resumed_at"] == 2 and summary["step"] == 4
    steps = [r["step"] for r in read_metrics(cfg.resolved_log_dir())]
    lines = (cfg.resolved_log_dir() / "metrics.jsonl").read_text().splitlines()
    assert steps == [1, 2, 3, 4] and len(lines) == 4  # no step done twice


def test_ray_train_learner_overlapped(task, pool):
    """The learner as a Ray Train worker, with generation overlapped (one-step off-policy)."""
    from selfdebug.rl.cli import run

    cfg = _cfg(task, "raytrain", "estimator=grpo", "steps=2", "use_ray_train=true",
               "overlap=true", "cpus_per_worker=0.5")
    summary = run(cfg, pool=pool)
    assert (cfg.resolved_output_dir() / "config.json").exists(), summary
    assert len(_rewards(cfg)) == 2
