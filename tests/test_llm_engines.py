"""vLLM on CPU inside Ray Data, and the teacher against a real OpenAI-compatible server.

One engine start per kind: the Ray Data generator test starts one engine actor, the
teacher tests share one `vllm.entrypoints.openai.api_server` subprocess (module fixture).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from selfdebug.llm.generate import EngineConfig, SamplingConfig, build_generator, sample_seed
from selfdebug.llm.prompts import generate_messages, render_prompt
from selfdebug.llm.teacher import Teacher, TeacherConfig, TeacherError, TeacherStage


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- plain units


def test_sampling_params_and_seeds():
    s = SamplingConfig(n=3, temperature=0.5, max_tokens=7, seed=11, stop=["<|end|>"])
    p = s.params("prompt", 2)
    assert p == {"n": 1, "temperature": 0.5, "top_p": 0.95, "max_tokens": 7,
                 "seed": sample_seed(11, "prompt", 2), "stop": ["<|end|>"]}
    seeds = {sample_seed(11, "prompt", k) for k in range(3)}
    assert len(seeds) == 3 and all(0 <= x < 2**31 for x in seeds)
    assert "seed" not in SamplingConfig().params("p", 0)


def test_cpu_engine_settings():
    from selfdebug.llm.generate import engine_env, engine_kwargs, processor_config

    eng = EngineConfig(model="/m", cpu=True, engine_kwargs={"max_num_seqs": 8})
    kw = engine_kwargs(eng)
    assert kw["enforce_eager"] is True and kw["gpu_memory_utilization"] <= 0.1
    assert kw["max_num_seqs"] == 8
    assert engine_env(eng)["VLLM_CPU_KVCACHE_SPACE"] == "1"
    cfg = processor_config(eng)
    assert cfg.placement_group_config["bundles"][0]["CPU"] == 0.5
    assert cfg.chat_template_stage is False and cfg.tokenize_stage is False
    gpu = engine_kwargs(EngineConfig(model="/m", cpu=False))
    assert gpu["enforce_eager"] is False and gpu["gpu_memory_utilization"] == 0.9


def test_expand_rejects_existing_sample_column_and_missing_prompt():
    from selfdebug.llm.generate import _expand

    sampling = SamplingConfig(n=2)
    rows = _expand({"prompt": "problem", "r": "text", "model": "m"}, prompt_column="r",
                   sample_column="sample_index", sampling=sampling)
    assert [r["sample_index"] for r in rows] == [0, 1]
    assert rows[0]["prompt"] == "text" and "model" not in rows[0]  # stashed, restored later
    with pytest.raises(ValueError, match="refine_index"):
        _expand({"r": "x", "sample_index": 0}, prompt_column="r",
                sample_column="sample_index", sampling=sampling)
    with pytest.raises(ValueError, match="rendered prompt"):
        _expand({"r": ""}, prompt_column="r", sample_column="s", sampling=sampling)


def test_generate_texts_groups_samples(monkeypatch):
    import selfdebug.llm.generate as gen

    class FakeDS:
        def __init__(self, rows):
            self.rows = rows

        def take_all(self):
            return self.rows

    def fake_build(engine, sampling):
        def run(ds):
            rows = [dict(r, sample_index=k, generated_text=f"{r['prompt']}#{k}",
                         generation_error="")
                    for r in ds.take_all() for k in range(sampling.n)]
            return FakeDS(rows[::-1])  # any order

        return run

    class FakeRayData:
        @staticmethod
        def from_items(items):
            return FakeDS(items)

    import ray

    monkeypatch.setattr(gen, "build_generator", fake_build)
    monkeypatch.setattr(ray, "data", FakeRayData, raising=False)
    monkeypatch.setattr("selfdebug.ray_utils.init_ray", lambda *a, **k: None)
    out = gen.generate_texts(EngineConfig(model="m", cpu=True), SamplingConfig(n=2), ["a", "b"])
    assert out == [["a#0", "a#1"], ["b#0", "b#1"]]


# ---------------------------------------------------------------- Ray Data + vLLM


@pytest.mark.ray
@pytest.mark.vllm
@pytest.mark.timeout(300)
def test_build_generator_on_ray_with_vllm_cpu(ray_cluster, tiny_model_dir):
    from transformers import AutoTokenizer

    ray = ray_cluster
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = []
    for i in range(4):
        problem = f"def f{i}(x):\n    '''Return x + {i}.'''\n"
        rows.append({
            "task_id": f"T/{i}",
            "prompt": problem,  # the problem text: must survive (vLLM uses "prompt" too)
            "model": "base",  # would be taken as a LoRA name if it reached the engine
            "rendered": render_prompt(tok, generate_messages(problem)),
        })
    rows.append({"task_id": "T/long", "prompt": "p", "model": "base",
                 "rendered": "a b c d " * 800})  # longer than max_model_len
    eng = EngineConfig(model=str(tiny_model_dir), max_model_len=512, batch_size=4)
    gen = build_generator(eng, SamplingConfig(n=2, max_tokens=16, temperature=1.0, seed=7),
                          prompt_column="rendered")
    t0 = time.time()
    out = gen(ray.data.from_items(rows)).take_all()
    print(f"generator: {len(out)} rows in {time.time() - t0:.1f} s (engine start included)")

    assert len(out) == 2 * len(rows)
    by_key = {(r["task_id"], r["sample_index"]): r for r in out}
    assert set(by_key) == {(r["task_id"], k) for r in rows for k in (0, 1)}
    for src in rows:
        for k in (0, 1):
            r = by_key[(src["task_id"], k)]
            for col, value in src.items():
                assert r[col] == value, col
            assert set(r) == set(src) | {"sample_index", "generated_text",
                                         "num_generated_tokens", "generation_error"}
            if src["task_id"] == "T/long":
                assert r["generation_error"] and r["generated_text"] == ""
            else:
                assert r["generation_error"] == ""
                assert r["generated_text"] and 0 < r["num_generated_tokens"] <= 16
    # Two samples of one prompt differ (own seeds).
    assert by_key[("T/0", 0)]["generated_text"] != by_key[("T/0", 1)]["generated_text"]



@pytest.mark.ray
@pytest.mark.vllm
@pytest.mark.timeout(420)
def test_engine_pool_shared_by_two_operators_and_restarted_engine(ray_cluster, tiny_model_dir):
    """One engine serves two Ray Data operators at once (synth's sampling and refinement);
    rows keep their columns, a too-long prompt is an error row. A killed engine is
    restarted by Ray and the call it had in flight runs again: nothing is lost."""
    from selfdebug.llm.engine_pool import (
        REFINE_PRIORITY,
        SAMPLE_PRIORITY,
        build_pool_generator,
        start_engines,
    )

    ray = ray_cluster
    eng = EngineConfig(model=str(tiny_model_dir), max_model_len=512, batch_size=4)
    [engine] = start_engines(eng)
    assert ray.get(engine.ready.remote(), timeout=300)
    cols = dict(prompt_column="p", sample_column="k", output_column="text",
                tokens_column="tokens", error_column="err")
    sample = build_pool_generator([engine], eng, SamplingConfig(n=2, max_tokens=16, seed=3),
                                  priority=SAMPLE_PRIORITY, **cols)
    refine = build_pool_generator([engine], eng, SamplingConfig(n=1, max_tokens=16, seed=4),
                                  priority=REFINE_PRIORITY, chat=True, **cols)
    rows = [{"id": i, "stage": "s", "p": f"def f{i}(x):\n", "prompt": "kept"} for i in range(6)]
    rows.append({"id": 99, "stage": "s", "p": "a b c d " * 800, "prompt": "kept"})
    # chat=True: messages as JSON, rendered by the engine with the model's chat template
    fixes = [{**r, "stage": "r", "p": json.dumps(generate_messages(r["p"]))} for r in rows[:6]]
    fixes.append({"id": 98, "stage": "r", "p": "not json", "prompt": "kept"})  # cannot render
    out = sample(ray.data.from_items(rows)).union(refine(ray.data.from_items(fixes))).take_all()
    got = {(r["stage"], r["id"], r["k"]): r for r in out}
    assert set(got) == ({("s", r["id"], k) for r in rows for k in (0, 1)}
                        | {("r", r["id"], 0) for r in fixes})
    for (_, i, _), r in got.items():
        assert r["prompt"] == "kept" and set(r) == {"id", "stage", "p", "prompt", "k", "text",
                                                    "tokens", "err"}
        if i in (98, 99):  # too long; not messages: error rows, the rest unaffected
            assert r["err"] and r["text"] == "" and r["tokens"] == 0
        else:
            assert r["err"] == "" and r["text"] and 0 < r["tokens"] <= 16
    assert got[("s", 0, 0)]["text"] != got[("s", 0, 1)]["text"]  # own seeds

    # A call in flight when the engine dies: Ray restarts the actor and runs it again.
    prompts = [f"def g{i}(x):\n" for i in range(64)]
    params = [{"max_tokens": 64, "temperature": 1.0, "seed": i, "ignore_eos": True}
              for i in range(64)]
    ref = engine.generate.remote(prompts, params, SAMPLE_PRIORITY)
    time.sleep(0.5)
    ray.kill(engine, no_restart=False)
    results = ray.get(ref, timeout=300)
    assert [(err, tokens) for _, tokens, err in results] == [("", 64)] * 64
    ray.kill(engine)


# ---------------------------------------------------------------- teacher


@pytest.fixture(scope="module")
def vllm_server(tiny_model_dir, tmp_path_factory):
    """vLLM's own OpenAI server on the tiny model, on 127.0.0.1 (CPU flags)."""
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="nobind")
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
           "--model", str(tiny_model_dir), "--served-model-name", "tiny",
           "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "1024",
           "--gpu-memory-utilization", "0.05", "--enforce-eager", "--disable-log-stats"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited ({proc.returncode}):\n{Path(log).read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"vLLM server not healthy in 180 s:\n{Path(log).read_text()[-3000:]}")
            time.sleep(1)
        yield f"{base}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=10)


def _conversation(i: int) -> list[dict]:
    return generate_messages(f"def f{i}(x):\n    '''Return x * {i}.'''\n")


@pytest.mark.vllm
@pytest.mark.timeout(300)
def test_teacher_chat_against_vllm_server(vllm_server):
    cfg = TeacherConfig(base_url=vllm_server, model="tiny", max_tokens=12, n=2,
                        max_concurrency=2, temperature=1.0, seed=1)
    teacher = Teacher(cfg)
    results = teacher.complete_many([_conversation(i) for i in range(3)])
    assert len(results) == 3
    for replies in results:
        assert len(replies) == 2 and all(r.text for r in replies)
        assert all(r.finish_reason in ("length", "stop") for r in replies)
    u = teacher.usage
    assert u.requests == 3 and u.failures == 0
    assert u.prompt_tokens > 3 * 10 and 0 < u.completion_tokens <= 3 * 2 * 12
    # The async API from the caller's own event loop (a fresh loop: a fresh client).
    import asyncio

    replies = asyncio.run(teacher.complete(_conversation(9)))
    assert len(replies) == 2 and teacher.usage.requests == 4

    # /v1/completions with the plain template.
    comp = Teacher(TeacherConfig(base_url=vllm_server, model="tiny", max_tokens=6,
                                 mode="completions"))
    [[reply]] = comp.complete_many([_conversation(1)])
    assert reply.text and comp.usage.completion_tokens <= 6

    # Not retryable (404 unknown model): fails at once with a clear message.
    bad = Teacher(TeacherConfig(base_url=vllm_server, model="nope", max_retries=3))
    with pytest.raises(TeacherError, match=r"model 'nope'.*1 attempt"):
        bad.complete_many([_conversation(0)])
    assert bad.usage.retries == 0 and bad.usage.failures == 1


@pytest.mark.ray
@pytest.mark.vllm
@pytest.mark.timeout(300)
def test_teacher_stage_in_ray_data(ray_cluster, vllm_server):
    from selfdebug.llm.teacher import build_teacher_generator

    ray = ray_cluster
    rows = [{"task_id": f"T/{i}", "messages": json.dumps(_conversation(i))} for i in range(3)]
    cfg = TeacherConfig(base_url=vllm_server, model="tiny", max_tokens=8, n=2)
    out = build_teacher_generator(cfg, batch_size=2)(ray.data.from_items(rows)).take_all()
    assert sorted((r["task_id"], r["sample_index"]) for r in out) == [
        (f"T/{i}", k) for i in range(3) for k in (0, 1)]
    for r in out:
        assert r["generated_text"] and r["generation_error"] == ""
        assert r["messages"] == rows[int(r["task_id"][2:])]["messages"]
        assert r["num_generated_tokens"] > 0

    # The callable class directly (numpy batch), with a dead endpoint: raises.
    import numpy as np

    dead = TeacherStage(TeacherConfig(base_url=f"http://127.0.0.1:{_free_port()}/v1",
                                      max_retries=0, timeout_s=2))
    with pytest.raises(TeacherError):
        dead({"messages": np.array([json.dumps(_conversation(0))], dtype=object)})


@pytest.mark.timeout(60)
def test_teacher_wrong_port_fails_after_retries():
    cfg = TeacherConfig(base_url=f"http://127.0.0.1:{_free_port()}/v1", model="m",
                        max_retries=2, backoff_s=0.05, timeout_s=5)
    teacher = Teacher(cfg)
    t0 = time.time()
    with pytest.raises(TeacherError, match=r"failed after 3 attempt.*APIConnectionError"):
        teacher.complete_many([_conversation(0)])
    assert time.time() - t0 < 20
    assert teacher.usage.retries == 2 and teacher.usage.failures == 1


@pytest.mark.timeout(60)
def test_teacher_timeout_is_an_error_not_a_hang():
    # Accepts connections and never answers.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    try:
        cfg = TeacherConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m",
                            max_retries=1, backoff_s=0.05, timeout_s=0.5)
        teacher = Teacher(cfg)
        t0 = time.time()
        with pytest.raises(TeacherError, match=r"2 attempt.*Timeout"):
            teacher.complete_many([_conversation(0)])
        assert time.time() - t0 < 15
    finally:
        srv.close()


@pytest.mark.timeout(60)
def test_teacher_retries_429_and_5xx_then_succeeds():
    statuses = [429, 503]  # the first two requests fail, the third answers

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server API)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if statuses:
                code = statuses.pop(0)
                body = json.dumps({"error": {"message": f"status {code}"}}).encode()
            else:
                code = 200
                body = json.dumps({
                    "id": "x", "object": "chat.completion", "created": 0, "model": "m",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "```python\nx=1\n```"}}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
                }).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = TeacherConfig(base_url=f"http://127.0.0.1:{server.server_port}/v1", model="m",
                            max_retries=3, backoff_s=0.05)
        teacher = Teacher(cfg)
        [[reply]] = teacher.complete_many([_conversation(0)])
        assert reply.text == "```python\nx=1\n```"
        assert teacher.usage.retries == 2 and teacher.usage.requests == 1
        assert (teacher.usage.prompt_tokens, teacher.usage.completion_tokens) == (5, 3)
    finally:
        server.shutdown()
