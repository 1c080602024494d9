"""`ray job submit` as users run it: a real Ray head on 127.0.0.1 with 2 CPUs (its own
temp dir and ports, token auth off), the repository as the working dir, the jobs/
runtime env, the CPU pipeline with small settings.

- the whole pipeline (synth → sft → rl → eval) ends SUCCEEDED and its run directory holds
  every stage's config, metrics, report and the final table;
- a driver killed in the middle of SFT, submitted again, resumes: synthesis (complete)
  is skipped and its output untouched, SFT goes on from its registered checkpoint (no
  checkpointed step trained again), and the synthesis rows match the uninterrupted run's;
- a stage starved on purpose (actors sized past the cluster, sizing off) fails within its
  stall timeout with a message naming the resources it waits for — no silent hang.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from ray_head import local_head  # tests/ is on sys.path (pytest rootdir-relative import)

pytestmark = [pytest.mark.ray, pytest.mark.vllm, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
CONFIG = "jobs/configs/pipeline-cpu.yaml"
RUNTIME_ENV = "jobs/runtime-env-cpu.yaml"
# The job judges every sample through the sandbox checker (issue 12), ≈ 20 % slower than
# before, and CI machines vary: a bound, not an expectation.
JOB_TIMEOUT = 840


@pytest.fixture(scope="module")
def head(shared_data):
    with local_head(2, env={"SELFDEBUG_SHARED_DATA": str(shared_data)}) as h:
        yield h


@pytest.fixture(scope="module")
def full_run(head, tmp_path_factory):
    """One uninterrupted pipeline job; (run_dir, job info, logs)."""
    run = tmp_path_factory.mktemp("pipeline") / "run-a"
    # eval.rounds=0: Init only (each refinement round starts the models' engines again,
    # minutes on this machine); the stages' own tests cover refinement
    job = head.submit(["python", "jobs/pipeline.py", "--config", CONFIG, f"run_dir={run}",
                       "eval.rounds=0"], cwd=str(REPO), runtime_env=RUNTIME_ENV)
    info = head.wait(job, JOB_TIMEOUT)
    return run, info, head.logs(job)


def _rows(out: Path, sub: str) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    return [r for s in sorted(manifest["shards"], key=int)
            for f in manifest["shards"][s]["files"] if f.startswith(sub)
            for r in pq.read_table(out / f).to_pylist()]


def test_pipeline_job_succeeds_and_fills_the_run_directory(full_run):
    run, info, logs = full_run
    assert info["status"] == "SUCCEEDED", logs[-4000:]
    report = json.loads((run / "report.json").read_text())
    steps = ["r1-synth", "r1-sft", "rl", "eval"]
    assert [s["step"] for s in report["stages"]] == steps
    assert {s["status"] for s in report["stages"]} == {"ran"}
    for step in steps:
        state = json.loads((run / step / "stage.json").read_text())
        assert state["status"] == "complete" and state["wall_s"] > 0
        assert (run / step / "config.yaml").is_file() and (run / step / "metrics.json").is_file()
        assert Path(next(s for s in report["stages"] if s["step"] == step)["report"]).is_file()
    # wiring: SFT read this run's synthesis output (+ the fixture), eval the SFT model
    inputs = json.loads((run / "r1-sft" / "stage.json").read_text())["inputs"]
    assert inputs == [str(run / "r1-synth" / "out"), str(run / "r1-sft" / "fixture")]
    assert str(run / "r1-synth" / "out") in (run / "r1-sft" / "config.yaml").read_text()
    assert (run / "r1-sft" / "model" / "config.json").is_file()
    # RL started from the SFT model (its actors sized to the 2-CPU head), and eval read
    # the RL model beside the base and SFT ones
    rl = yaml.safe_load((run / "rl" / "config.yaml").read_text())
    assert rl["model"] == str(run / "r1-sft" / "model")
    assert (run / "rl" / "model" / "config.json").is_file()
    models = yaml.safe_load((run / "eval" / "config.yaml").read_text())["models"]
    assert [(m["name"], m["path"]) for m in models] == [
        ("base", "tiny"), ("SFT", str(run / "r1-sft" / "model")),
        ("SFT+RL", str(run / "rl" / "model"))]
    final = report["comparison"]
    assert final["models"] == ["base", "SFT", "SFT+RL"]
    assert all(f"| {m} |" in final["table2"] for m in final["models"])
    assert "## Final comparison" in (run / "report.md").read_text()
    assert "[pipeline] 4/4 eval: done" in logs


def _wait_for(pred, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"waited {timeout:.0f} s for {what}")


def _state(run: Path, step: str) -> dict:
    try:
        return json.loads((run / step / "stage.json").read_text())
    except (OSError, ValueError):
        return {}


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns
            for p in root.rglob("*") if p.is_file()} if root.is_dir() else {}


def _train_log(run: Path) -> list[dict]:
    log = run / "r1-sft" / "logs" / "metrics.jsonl"
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()] \
        if log.is_file() else []
    return [r for r in lines if r.get("split") == "train"]


def _durable_checkpoints(ckpt: Path) -> list[str]:
    """The checkpoints Ray Train has registered (its snapshot lists them; a resumed run
    starts from the latest). A ``checkpoint_*`` directory alone may still be being copied
    in: not yet progress a new driver would find."""
    try:
        snap = json.loads((ckpt / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, ValueError):
        return []
    return [c["checkpoint_dir_name"] for c in snap.get("checkpoint_results", [])]


def test_killed_driver_resumes_without_redoing_or_losing_work(head, full_run, tmp_path):
    """The kill lands in SFT, once Ray Train has registered a checkpoint: synthesis is the
    last complete stage (skipped on resubmission), SFT the first incomplete one (its own
    resume: from that checkpoint). Not in synthesis: its shards all commit within ~50 ms
    here (one engine batch for the 4 problems), a window no poll can hit reliably; its
    per-shard resume after a killed run is tested in test_synth_pipeline/test_faults."""
    run_a = full_run[0]
    run = tmp_path / "run-b"
    out, ckpt = run / "r1-synth" / "out", run / "r1-sft" / "checkpoints" / "sft"
    cmd = ["python", "jobs/pipeline.py", "--config", CONFIG, f"run_dir={run}",
           "stages=[synth,sft]"]
    job = head.submit(cmd, cwd=str(REPO), runtime_env=RUNTIME_ENV)

    seen_held: list[str] = []  # what this job held while SFT ran: the check below can fail

    def mid_sft() -> bool:
        sft = _state(run, "r1-sft").get("status") == "running"
        if sft and not any("RayTrainWorker" in h for h in seen_held) and (
                jid := head.job(job).get("job_id")):
            seen_held[:] = head.held_by(jid)  # SFT's workers reserve the head's CPUs
        return (_state(run, "r1-synth").get("status") == "complete" and sft
                and bool(_durable_checkpoints(ckpt)))

    _wait_for(mid_sft, JOB_TIMEOUT, "SFT running with a registered checkpoint", poll=0.2)
    head.stop_job(job)  # SIGTERM to the driver, SIGKILL 3 s later (and its actors go with it)
    stopped = head.wait(job, 120)
    assert stopped["status"] in ("STOPPED", "FAILED")
    assert any("RayTrainWorker" in h for h in seen_held), seen_held
    # The stop ends the job's actors and placement groups too (the train workers outlive
    # the driver by a moment, still writing): nothing is left to starve the next job, and
    # the files below are read only once nothing of the stopped job can change them.
    deadline = time.monotonic() + 60
    while held := head.held_by(stopped["job_id"]):
        assert time.monotonic() < deadline, f"60 s after the stop, the job still holds {held}"
        time.sleep(1)
    assert _state(run, "r1-sft")["status"] == "running"  # the kill came in the middle of it
    # What is complete at the kill must stay as it is: the whole synthesis output (the
    # stage is skipped) and every registered checkpoint (trained steps, not trained again).
    durable = _durable_checkpoints(ckpt)
    fixture = run / "r1-sft" / "fixture"  # SFT's other input, built before training
    kept = {"synth": _files(out), "fixture": _files(fixture),
            "ckpt": {f: t for f, t in _files(ckpt).items() if f.split("/")[0] in durable}}
    done_steps = max(int(c.split("_")[1]) for c in durable)
    # the records of checkpointed steps (timings included): a step trained again differs
    trained = [r for r in _train_log(run) if r["step"] <= done_steps]

    job2 = head.submit(cmd, cwd=str(REPO), runtime_env=RUNTIME_ENV)
    info = head.wait(job2, JOB_TIMEOUT)
    logs = head.logs(job2)
    assert info["status"] == "SUCCEEDED", logs[-4000:]
    assert "r1-synth: complete for this config" in logs
    assert "r1-sft: an earlier run stopped in this stage; resuming it" in logs
    report = json.loads((run / "report.json").read_text())
    assert {s["step"]: s["status"] for s in report["stages"]} == \
        {"r1-synth": "skipped", "r1-sft": "resumed"}
    assert _state(run, "r1-sft")["attempts"] == 2
    for name, files in kept.items():
        now = _files({"synth": out, "fixture": fixture, "ckpt": ckpt}[name])
        assert files and {f: now.get(f) for f in files} == files, name
    log = _train_log(run)  # SFT went on from its checkpoint, not from step 1
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert log[:len(trained)] == trained
    attempts = [json.loads(x)["resumed_at"] for x in
                (run / "r1-sft" / "logs" / "attempts.jsonl").read_text().splitlines()]
    assert attempts == [0, done_steps]
    # nothing lost, nothing doubled: the same rows and ids as the uninterrupted run
    a_out = run_a / "r1-synth" / "out"
    for sub, key in (("samples", ("task_id", "sample_index")), ("debug", ("record_id",))):
        mine = [tuple(r[k] for k in key) for r in _rows(out, sub)]
        theirs = [tuple(r[k] for k in key) for r in _rows(a_out, sub)]
        assert len(mine) == len(set(mine)) and sorted(mine) == sorted(theirs), sub
    assert (run / "r1-sft" / "model" / "config.json").is_file()


def test_starved_stage_fails_within_its_stall_timeout_naming_resources(head, tmp_path):
    job = head.submit(
        ["python", "jobs/synth.py", "--config", "jobs/configs/synth-cpu.yaml", "limit=2",
         f"out_dir={tmp_path / 'starved'}", "fit_resources=false",
         "engine.num_cpus=3", "stall_timeout_s=30"],  # an engine bigger than the cluster
        cwd=str(REPO), runtime_env=RUNTIME_ENV)
    t0 = time.monotonic()
    info = head.wait(job, 300)
    logs = head.logs(job)
    assert info["status"] == "FAILED", logs[-3000:]
    assert time.monotonic() - t0 < 240
    assert "synth: no progress for" in logs and "stall_timeout_s=30" in logs
    assert "declared by this job: vLLM engines (shared pool): 1 × 3 CPU" in logs
    assert "pending demands:" in logs and "CPU 3" in logs  # what it waits for, by shape
