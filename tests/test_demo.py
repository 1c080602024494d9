"""A reduced run of the whole demo (real Ray, vLLM on CPU, sandbox, Ray Train SFT) writes
a well-formed report; the second call finds the pretrained base model in the cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from selfdebug.config import load_config
from selfdebug.demo.config import DemoConfig

pytestmark = [pytest.mark.ray, pytest.mark.vllm]
REPO = Path(__file__).resolve().parents[1]

REDUCED = [
    "rounds=1", "world.train_problems=60", "world.test_problems=24",
    "base.problems=200", "base.steps=12", "base.warmup_steps=2",
    "synth.problems=30", "synth.samples=1", "synth.attempts=2", "synth.max_tokens=64",
    "sft.epochs=1", "eval.problems=16", "eval.samples=1", "eval.max_tokens=64",
]


def test_config_is_checked():
    with pytest.raises(ValueError, match="arms"):
        load_config(DemoConfig, "jobs/configs/demo-cpu.yaml", ["arms=[nope]"]).validate()
    with pytest.raises(ValueError, match="synth.problems"):
        load_config(DemoConfig, "jobs/configs/demo-cpu.yaml",
                    ["synth.problems=5000"]).validate()
    with pytest.raises(ValueError, match="sft.replay"):
        load_config(DemoConfig, "jobs/configs/demo-cpu.yaml", ["sft.replay=-1"]).validate()
    with pytest.raises(ValueError, match="base.attention 'flash'"):
        load_config(DemoConfig, "jobs/configs/demo-cpu.yaml", ["base.attention=flash"]).validate()


def test_a_ray_job_refuses_relative_output_paths(tmp_path, monkeypatch):
    """Submitted as a Ray job, the demo runs in Ray's unpacked working dir, which Ray
    deletes: a relative out_dir or cache_dir is refused before anything starts."""
    env = {**os.environ, "RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"}  # as in a job's driver
    cmd = [sys.executable, "jobs/demo.py", "--config", "jobs/configs/demo-cpu.yaml"]
    bad = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2, bad.stderr
    assert "out_dir 'runs/demo-cpu' and base.cache_dir '.cache/demo-base': relative" in bad.stderr
    cfg = load_config(DemoConfig, REPO / "jobs/configs/demo-cpu.yaml",
                      [f"out_dir={tmp_path}/run", f"base.cache_dir={tmp_path}/cache"])
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    cfg.validate()  # absolute paths: accepted


def _example(kind: str, task: str, answer: str) -> dict:
    return {"example_id": f"{kind}:{task}:0", "task_id": task, "kind": kind,
            "messages": json.dumps([{"role": "user", "content": task}]), "answer": answer}


def test_a_round_trains_on_its_new_examples_and_a_replayed_share_of_earlier_ones():
    from selfdebug.demo.run import round_examples

    first = [_example("generate", f"t{i}", "a") for i in range(6)]
    pool: dict = {}
    ex, new = round_examples(pool, first, 1, 1.0, seed=0)
    assert new == 6 and [e["example_id"] for e in ex] == [f"r1:generate:t{i}:0" for i in range(6)]
    # round 2 re-finds t0 and t1 (not new) and finds two new examples
    second = first[:2] + [_example("refine", "t0", "b"), _example("refine", "t9", "c")]
    ex, new = round_examples(dict(pool), second, 2, 1.0, seed=0)
    assert new == 2 and len(ex) == 4
    assert [e["example_id"] for e in ex[2:]] == ["r2:refine:t0:0", "r2:refine:t9:0"]
    assert all(e["example_id"].startswith("r1:") for e in ex[:2])  # drawn from round 1's six
    again, _ = round_examples(dict(pool), second, 2, 1.0, seed=0)
    assert again == ex  # the draw is seeded
    # null: every earlier example, as well as the new ones
    ex, new = round_examples(pool, second, 2, None, seed=0)
    assert new == 2 and len(ex) == 8 and len(pool) == 8
    # nothing new: the round trains on nothing (the model stays as it is)
    assert round_examples(pool, second, 3, 1.0, seed=0) == ([], 0)


@pytest.mark.timeout(420)
def test_reduced_demo_writes_a_report(ray_cluster, tmp_path):
    from selfdebug.demo.run import run_demo

    cfg = load_config(DemoConfig, "jobs/configs/demo-cpu.yaml", REDUCED + [
        f"out_dir={tmp_path / 'run'}", f"base.cache_dir={tmp_path / 'cache'}"])
    logs: list[str] = []
    report = run_demo(cfg, log=logs.append)
    out = tmp_path / "run"
    data = json.loads((out / "demo_report.json").read_text())
    assert (out / "demo_report.md").read_text().startswith("# demo-cpu")
    assert (out / "demo_rounds.png").stat().st_size > 1000
    assert len((out / "world.jsonl").read_text().splitlines()) == 84
    for arm in ("method", "generation_only"):
        rounds = data["results"][arm]
        assert [r["round"] for r in rounds] == [0, 1]
        for r in rounds:
            assert r["samples"] == 16 and 0 <= r["init@1"] <= r["refine@1"] <= 1
            assert r["fixed_set_size"] == rounds[0]["fixed_set_size"]
        sft = data["data"][arm][0]
        # a 12-step base model may get nothing right: then SFT is skipped, and says so
        assert sft["steps"] >= 1 if sft["examples"] else sft["skipped"] == "no examples"
    # the control trains on correct initial samples only
    assert "refine" not in data["data"]["generation_only"][0]["by_kind"]
    assert set(data["acceptance"]) >= {"method_refine_gain", "repair_vs_resample",
                                       "control_refine_gain", "wall_time"}
    assert data["metadata"]["seed"] == 0 and data["base_model"]["cached"] is False
    stages = {s["stage"] for s in data["stages"]}
    assert {"base model", "eval base", "sft r1 method", "eval r1 generation_only"} <= stages
    assert report["judged"] >= report["executions"] > 0 and report["generated_tokens"] > 0
    assert 0 < report["generate_s"] + report["judge_s"] < data["wall_s"]
    # this process started the cluster (the test's own): its Ray processes' CPU counts,
    # more than this process alone spent (engines and trainer are other processes)
    assert data["cpu_s"] > 0 and all(s["cpu_s"] is not None for s in data["stages"])
    # throughput: this run's own work over its own stage times
    speed = data["throughput"]
    sft_tokens = sum(d.get("tokens") or 0 for arm in data["data"].values() for d in arm)
    assert speed["sft"]["tokens"] == sft_tokens
    assert speed["pretraining"]["tokens"] == data["base_model"]["tokens"] > 0
    rollout = speed["synthesis + evaluation: generated"]
    assert rollout["tokens"] == report["generated_tokens"]
    assert 0 < rollout["wall_s"] < data["wall_s"] and rollout["per_s"] > 0
    assert "| pretraining |" in (out / "demo_report.md").read_text()
    # a rerun with the same base settings skips pretraining and says so
    from selfdebug.demo.base_model import pretrained_base

    again = pretrained_base(cfg.world, cfg.base, cfg.seed, log=logs.append)
    assert again["cached"] and again["path"] == data["base_model"]["path"]
    assert any("skipping pretraining" in line for line in logs)


class _ScriptedEngines:
    """Stands in for the engines only because which programs a model writes cannot be
    scripted with a real one (the reduced run above covers vLLM). It writes the canonical
    solution from attempt ``right[task_id]`` (or ``right["task_id:sample"]``) on and the
    same wrong program otherwise."""

    def __init__(self, problems: dict, right: dict[str, int]):
        self.problems, self.right, self.keys = problems, right, []

    def generate(self, requests, sampling, keys):
        self.keys += keys
        out = []
        for key in keys:
            parts = key.split(":")  # ...:task_id:sample, or ...:refine:task_id:sample:attempt
            task_id = parts[-3] if "refine" in parts else parts[-2]
            p = self.problems[task_id]
            first = self.right.get(f"{task_id}:{parts[-2]}", self.right.get(task_id, 99))
            good = "refine" in parts and int(parts[-1]) >= first
            code = p.canonical_solution if good else p.prompt + "    return None\n"
            out.append(f"```python\n{code}```")
        return out


def test_synthesis_stops_repairing_a_program_at_its_first_verified_repair(ray_cluster):
    from selfdebug.demo.engines import Sandbox
    from selfdebug.demo.run import examples_of, synthesize
    from selfdebug.world.generate import WorldConfig, generate_world, problems_of

    cfg = load_config(DemoConfig, "jobs/configs/demo-cpu.yaml", ["synth.samples=1"])
    problems = problems_of(generate_world(WorldConfig(train_problems=3, test_problems=0))["train"])
    by_id = {p.task_id: p for p in problems}
    a, b, c = (p.task_id for p in problems)
    engines = _ScriptedEngines(by_id, {a: 0, b: 2})  # c: no attempt is right
    sandbox = Sandbox(problems, cfg.sandbox)
    try:
        data = synthesize(engines, sandbox, problems, by_id, cfg, 0, "r0", attempts=8)
    finally:
        sandbox.shutdown()
    tried = {t: sorted(r["attempt"] for r in data["repairs"] if r["task_id"] == t)
             for t in (a, b, c)}
    # stages of 1, 1, 2, 4 attempts: b's first right one (2) comes in the stage of 2 and 3
    assert tried == {a: [0], b: [0, 1, 2, 3], c: list(range(8))}
    # attempt k is the same request (key, hence seed) in whichever stage it runs
    assert f"r0:synth:refine:{c}:0:7" in engines.keys
    # each distinct program ran once: the 3 wrong samples (every wrong repair repeats one)
    # and the 2 canonical solutions (b's attempt 3 repeats its attempt 2), of 16 judged
    assert (sandbox.judged, sandbox.executions) == (3 + 1 + 4 + 8, 3 + 2)
    kinds = sorted(e["kind"] for e in examples_of(data, by_id, with_repairs=True))
    assert kinds == ["refine", "refine"]


def test_synthesis_stops_repairing_identical_samples_together(ray_cluster):
    """Two identical wrong samples are one wrong program: once either is repaired, the other
    stops too, and SFT keeps the same example as when each went on to its own repair."""
    from selfdebug.demo.engines import Sampling, Sandbox
    from selfdebug.demo.rollout import repair
    from selfdebug.demo.run import examples_of, synthesize
    from selfdebug.world.generate import WorldConfig, generate_world, problems_of

    cfg = load_config(DemoConfig, "jobs/configs/demo-cpu.yaml", ["synth.samples=2"])
    problems = problems_of(generate_world(WorldConfig(train_problems=3, test_problems=0))["train"])
    by_id = {p.task_id: p for p in problems}
    a, b, c = (p.task_id for p in problems)
    # a: sample 1's first attempt is right, sample 0's only from attempt 3; b: both from 2
    engines = _ScriptedEngines(by_id, {f"{a}:0": 3, f"{a}:1": 0, b: 2})
    sandbox = Sandbox(problems, cfg.sandbox)
    try:
        data = synthesize(engines, sandbox, problems, by_id, cfg, 0, "r0", attempts=8)
        s = Sampling(cfg.synth.temperature, cfg.synth.top_p, cfg.synth.max_tokens, 0)
        every = repair(engines, sandbox, by_id, data["samples"], 8, s, "r0:synth")
    finally:
        sandbox.shutdown()
    tried = {(t, i): sorted(r["attempt"] for r in data["repairs"]
                            if (r["task_id"], r["sample_index"]) == (t, i))
             for t in (a, b, c) for i in (0, 1)}
    # a's sample 0 stops with sample 1 (it would have gone on to attempt 3)
    assert tried == {(a, 0): [0], (a, 1): [0], (b, 0): [0, 1, 2, 3], (b, 1): [0, 1, 2, 3],
                     (c, 0): list(range(8)), (c, 1): list(range(8))}
    kept = examples_of(data, by_id, with_repairs=True)
    # the earliest stage's first verified repair of each program, as before the change
    assert [e["example_id"] for e in kept] == [f"refine:{a}:1:0", f"refine:{b}:0:2"]
    # the same training rows as every attempt of every sample gives
    rows = {(e["messages"], e["answer"]) for e in kept}
    assert rows == {(e["messages"], e["answer"]) for e in
                    examples_of({"samples": data["samples"], "repairs": every}, by_id, True)}
