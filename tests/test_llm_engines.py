"""The ray.data.llm batch stage on CPU, and the teacher against a real OpenAI-compatible
server (the engine pool has its own module, test_engine_pool.py).

One engine start per kind: the batch stage test starts one engine actor, the teacher
tests share one `vllm.entrypoints.openai.api_server` subprocess (module fixture).
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

from selfdebug.llm.config import EngineConfig, SamplingConfig, sample_seed
from selfdebug.llm.generate import batch_stage
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
    from selfdebug.llm.config import engine_env, engine_kwargs
    from selfdebug.llm.generate import processor_config

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


def test_expand_rows_rejects_existing_sample_column_and_missing_prompt():
    from selfdebug.llm.generate import ExpandRows

    expand = ExpandRows("unused-model", SamplingConfig(n=2))
    rows = expand({"prompt": "text", "model": "m"})
    assert [r["sample_index"] for r in rows] == [0, 1]
    assert rows[0]["prompt"] == "text" and "model" not in rows[0]  # stashed, restored later
    with pytest.raises(ValueError, match="sample_index"):
        expand({"prompt": "x", "sample_index": 0})
    with pytest.raises(ValueError, match="neither"):
        expand({"prompt": ""})


# ---------------------------------------------------------------- Ray Data + vLLM


@pytest.mark.ray
@pytest.mark.vllm
@pytest.mark.timeout(300)
def test_batch_stage_on_ray_with_vllm_cpu(ray_cluster, tiny_model_dir):
    from transformers import AutoTokenizer

    ray = ray_cluster
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = []
    for i in range(4):
        problem = f"def f{i}(x):\n    '''Return x + {i}.'''\n"
        row = {"task_id": f"T/{i}",
               "prompt": problem,  # the problem text: must survive (vLLM uses "prompt" too)
               "model": "base"}  # would be taken as a LoRA name if it reached the engine
        # messages, rendered by the stage; or (messages null) a rendered prompt
        row["messages"] = json.dumps(generate_messages(problem)) if i % 2 else None
        if not i % 2:
            row["prompt"] = render_prompt(tok, generate_messages(problem))
        rows.append(row)
    rows.append({"task_id": "T/long", "prompt": "a b c d " * 800, "model": "base",
                 "messages": None})
    rows.append({"task_id": "T/bad", "prompt": "p", "model": "base", "messages": "not json"})
    eng = EngineConfig(model=str(tiny_model_dir), max_model_len=512, batch_size=4)
    gen = batch_stage(eng, SamplingConfig(n=2, max_tokens=16, temperature=1.0, seed=7))
    t0 = time.time()
    out = gen(ray.data.from_items(rows)).take_all()
    print(f"batch stage: {len(out)} rows in {time.time() - t0:.1f} s (engine start included)")

    by_key = {(r["task_id"], r["sample_index"]): r for r in out}
    assert len(out) == 2 * len(rows)
    assert set(by_key) == {(r["task_id"], k) for r in rows for k in (0, 1)}
    for src in rows:
        for k in (0, 1):
            r = by_key[(src["task_id"], k)]
            for col, value in src.items():
                assert r[col] == value, col
            assert set(r) == set(src) | {"sample_index", "generated_text",
                                         "num_generated_tokens", "generation_error"}
            if src["task_id"] in ("T/long", "T/bad"):
                assert r["generation_error"] and r["generated_text"] == ""
            else:
                assert r["generation_error"] == ""
                assert r["generated_text"] and 0 < r["num_generated_tokens"] <= 16
    assert "JSONDecodeError" in by_key[("T/bad", 0)]["generation_error"]
    # Two samples of one prompt differ (own seeds).
    assert by_key[("T/0", 0)]["generated_text"] != by_key[("T/0", 1)]["generated_text"]


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
    from selfdebug.llm.teacher import teacher_stage

    ray = ray_cluster
    rows = [{"task_id": f"T/{i}", "messages": json.dumps(_conversation(i))} for i in range(3)]
    cfg = TeacherConfig(base_url=vllm_server, model="tiny", max_tokens=8, n=2)
    out = teacher_stage(cfg, batch_size=2)(ray.data.from_items(rows)).take_all()
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
