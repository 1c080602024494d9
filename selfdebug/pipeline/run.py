"""Running the plan: each step skipped, resumed or (re)run, its state kept on disk.

``run_dir/<step>/stage.json`` records the step's fingerprint and status. ``complete`` with
the same fingerprint: skipped. ``running`` with the same fingerprint (a killed or failed
driver): run again, and the stage's own resume (synthesis manifest, SFT/RL checkpoints,
evaluation shards) continues it. Another fingerprint: its directory is wiped and it runs
from scratch; fingerprints chain through the steps each one reads, so every later step
re-runs too, and the console says why.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from selfdebug.pipeline.config import KINDS, PipelineConfig, Step, fingerprint, load, plan

STATE = "stage.json"


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def read_state(step_dir: Path) -> dict:
    p = step_dir / STATE
    return json.loads(p.read_text()) if p.is_file() else {}


class ResourceMeter:
    """Integrates the cluster's CPUs and GPUs over a stage's wall time (autoscaling
    clusters change size mid-stage): resource-hours for the cost column."""

    def __init__(self, every_s: float = 5.0):
        self.every_s, self.cpu_s, self.gpu_s = every_s, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="resource-meter")

    @staticmethod
    def _now() -> tuple[float, float]:
        try:
            import ray

            r = ray.cluster_resources()
            return float(r.get("CPU", 0)), float(r.get("GPU", 0))
        except Exception:  # noqa: BLE001  Ray gone: count nothing for this interval
            return 0.0, 0.0

    def _run(self) -> None:
        last = time.monotonic()
        cpu, gpu = self._now()
        while not self._stop.wait(self.every_s):
            now = time.monotonic()
            self.cpu_s += cpu * (now - last)
            self.gpu_s += gpu * (now - last)
            last, (cpu, gpu) = now, self._now()
        now = time.monotonic()
        self.cpu_s += cpu * (now - last)
        self.gpu_s += gpu * (now - last)

    def __enter__(self) -> ResourceMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


# ------------------------------------------------------------------ data for SFT
def build_fixture(step: Step) -> str:
    """The MBPP fixture dataset SFT reads beside the synthesis output (``sft_data:
    fixture``), built in the step's directory; a synthesis-format output with a manifest."""
    from selfdebug.train.fixture_data import (
        build_fixture_dataset,
        default_mbpp_path,
        fixture_is_built,
    )

    # A resumed step (an earlier driver stopped in it) keeps the fixture it trained on:
    # built again, it would be rewritten under the checkpoint that read it.
    if fixture_is_built(step.fixture, step.fixture_problems):
        return str(step.fixture)
    mbpp = default_mbpp_path()
    if mbpp is None:
        raise FileNotFoundError("sft_data 'fixture' needs mbpp.jsonl: set "
                                "SELFDEBUG_SHARED_DATA to the directory holding it")
    return str(build_fixture_dataset(step.fixture, mbpp, step.fixture_problems))


# ------------------------------------------------------------------ one step
def _scalars(d: dict) -> dict:
    return {k: v for k, v in d.items()
            if isinstance(v, bool | int | float) or (isinstance(v, str) and len(v) < 300)}


def summarize(kind: str, result: dict) -> dict:
    """The few numbers of a stage's result that the pipeline report shows."""
    if kind == "synth":
        return {"shards": result.get("shards"), **(result.get("totals", {}).get("all") or {}),
                "throughput": result.get("this_run", {}).get("throughput")}
    if kind == "eval":
        return {"results": result.get("results"), "run": result.get("run")}
    return _scalars(result)


def run_step(step: Step, typed: Any, log: Callable[[str], None]) -> dict:
    """Run one stage's job; raises when it did not finish."""
    runner = load(KINDS[step.kind][1])
    if step.kind == "eval":
        return runner(typed, log=log)
    result = runner(typed)
    if step.kind == "synth" and result.get("shards", {}).get("incomplete"):
        raise RuntimeError(f"{step.id}: shards {result['shards']['incomplete']} incomplete; "
                           f"run the pipeline again to finish them")
    return result


def run_pipeline(cfg: PipelineConfig, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) every step of ``cfg``; returns the report's data."""
    from selfdebug.pipeline.report import write_report
    from selfdebug.ray_utils import init_ray

    cfg.validate()
    steps = plan(cfg)
    typed = {s.id: s.typed() for s in steps}  # every stage config checked before any work
    run = Path(cfg.run_dir).resolve()
    run.mkdir(parents=True, exist_ok=True)
    (run / "pipeline.yaml").write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))
    init_ray(cfg.ray_address or None)  # one connection for every stage
    fps: dict[str, str] = {}
    rerun: set[str] = set()
    outcomes = []
    t_start = time.time()
    for i, step in enumerate(steps, 1):
        tag = f"[pipeline] {i}/{len(steps)} {step.id}"
        fp = fingerprint(step, [fps[a] for a in step.after])
        fps[step.id] = fp
        sdir = run / step.id
        state = read_state(sdir)
        if state.get("status") == "complete" and state.get("fingerprint") == fp:
            log(f"{tag}: complete for this config ({fp}), skipped")
            outcomes.append({**state, "id": step.id, "kind": step.kind, "status": "skipped"})
            continue
        status = "ran"
        if state and state.get("fingerprint") != fp:
            why = ("an earlier stage it reads was re-run" if rerun & set(step.after)
                   else "its config changed")
            log(f"{tag}: {why} (fingerprint {state.get('fingerprint')} → {fp}); its old "
                f"outputs are removed and it re-runs, as does every stage after it")
            shutil.rmtree(sdir)
            state = {}
        elif state.get("status") == "running":
            status = "resumed"
            log(f"{tag}: an earlier run stopped in this stage; resuming it")
        rerun.add(step.id)
        sdir.mkdir(parents=True, exist_ok=True)
        (sdir / "config.yaml").write_text(yaml.safe_dump(asdict(typed[step.id]),
                                                         sort_keys=False))
        attempts = int(state.get("attempts", 0)) + 1
        base = {"id": step.id, "kind": step.kind, "round": step.round, "fingerprint": fp,
                "after": step.after, "outputs": step.outputs, "attempts": attempts}
        _write_json(sdir / STATE, {**base, "status": "running", "started": time.time()})
        log(f"{tag}: running ({step.kind}; outputs {step.outputs})")
        t0 = time.time()
        with ResourceMeter() as meter:
            if step.fixture:
                build_fixture(step)
            inputs = step.data.get("data_dirs")
            try:
                result = run_step(step, typed[step.id], log)
            except BaseException as e:
                _write_json(sdir / STATE, {**base, "status": "running", "last_error":
                                           f"{type(e).__name__}: {e}"[:4000]})
                raise
        wall = time.time() - t0
        metrics = summarize(step.kind, result)
        state = {**base, "status": "complete", "finished": time.time(), "wall_s": wall,
                 "cpu_hours": meter.cpu_s / 3600, "gpu_hours": meter.gpu_s / 3600,
                 "inputs": inputs, "metrics": metrics}
        _write_json(sdir / "metrics.json", {"metrics": metrics, "result": result})
        _write_json(sdir / STATE, state)
        log(f"{tag}: done in {wall:.0f} s")
        outcomes.append({**state, "status": status})
    return write_report(cfg, run, steps, outcomes, time.time() - t_start)
