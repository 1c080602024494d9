"""`selfdebug pipeline` without a cluster: the plan's wiring, fingerprints, and the
skip / resume / re-run decisions. The stage jobs themselves are replaced by small
stand-ins here (they are run for real in test_job_submit_pipeline.py); nothing else is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfdebug.config import ConfigError, load_config
from selfdebug.pipeline import config as C
from selfdebug.pipeline.config import PipelineConfig, fingerprint, plan

REPO = Path(__file__).resolve().parents[1]


def _cfg(tmp_path, *overrides) -> PipelineConfig:
    cfg = load_config(PipelineConfig, REPO / "jobs/configs/pipeline-cpu.yaml",
                      [f"run_dir={tmp_path / 'run'}", "stages=[synth,sft,eval]", *overrides])
    cfg.validate()
    return cfg


def _fps(steps) -> dict[str, str]:
    fps = {}
    for s in steps:
        fps[s.id] = fingerprint(s, [fps[a] for a in s.after])
    return fps


def test_plan_wires_outputs_into_inputs(tmp_path):
    steps = plan(_cfg(tmp_path))
    assert [s.id for s in steps] == ["r1-synth", "r1-sft", "eval"]
    synth, sft, ev = steps
    run = tmp_path / "run"
    assert synth.data["out_dir"] == str(run / "r1-synth/out") and synth.data["model"] == "tiny"
    # this round's synthesis output and the fixture built beside it
    assert sft.data["data_dirs"] == [str(run / "r1-synth/out"), str(run / "r1-sft/fixture")]
    assert sft.fixture == str(run / "r1-sft/fixture") and sft.fixture_problems == 16
    assert sft.data["out_dir"] == str(run / "r1-sft/model")
    assert sft.after == ["r1-synth"] and ev.after == ["r1-sft"]
    assert ev.data["models"] == [{"name": "base", "path": "tiny"},
                                 {"name": "SFT", "path": str(run / "r1-sft/model")}]
    assert ev.data["n"] == 2 and ev.data["sandbox"]["actors"] == 2  # section over its file
    for s in steps:
        s.typed()  # each stage config validates as that job's dataclass


def test_rounds_bootstrap_from_the_previous_sft_model(tmp_path):
    steps = plan(_cfg(tmp_path, "rounds=2", "eval_every_round=true", "sft_data=[synth]"))
    ids = [s.id for s in steps]
    assert ids == ["r1-synth", "r1-sft", "r2-synth", "r2-sft", "eval"]
    by = {s.id: s for s in steps}
    r1_model = str(tmp_path / "run/r1-sft/model")
    assert by["r2-synth"].data["model"] == r1_model and by["r2-sft"].data["model"] == r1_model
    assert by["r2-synth"].data["seed"] != by["r1-synth"].data["seed"]  # new samples
    assert by["r2-sft"].data["data_dirs"] == [str(tmp_path / "run/r2-synth/out")]
    assert [m["name"] for m in by["eval"].data["models"]] == ["base", "SFT r1", "SFT r2"]


def test_fingerprints_chain_through_what_a_stage_reads(tmp_path):
    base = _fps(plan(_cfg(tmp_path)))
    assert len(set(base.values())) == 3
    ev = _fps(plan(_cfg(tmp_path, "eval.n=3")))
    assert ev["r1-synth"] == base["r1-synth"] and ev["r1-sft"] == base["r1-sft"]
    assert ev["eval"] != base["eval"]
    syn = _fps(plan(_cfg(tmp_path, "synth.attempts=2")))
    assert all(syn[k] != base[k] for k in base)  # a synth change reaches every stage
    run_only = _fps(plan(_cfg(tmp_path, "stall_timeout_s=5", "synth.sandbox.actors=3")))
    assert run_only == base  # how a stage runs is not what it makes


def test_bad_configs_are_refused_with_the_reason(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="order"):
        _cfg(tmp_path, "stages=[sft,synth]")
    with pytest.raises(ConfigError, match="stages"):
        _cfg(tmp_path, "stages=[synth,train]")
    monkeypatch.setattr(C, "rl_available", lambda: False)
    with pytest.raises(ConfigError, match="selfdebug.rl"):
        _cfg(tmp_path, "stages=[synth,sft,rl,eval]")
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # as in a job's driver
    with pytest.raises(ConfigError, match="absolute path"):  # runs/... inside a Ray job's
        load_config(PipelineConfig, REPO / "jobs/configs/pipeline-cpu.yaml",  # dir: deleted
                    ["stages=[synth,sft,eval]"])  # (rl: refused above, here not available)
    with pytest.raises(ConfigError, match="not found"):
        plan(_cfg(tmp_path, "synth.config=jobs/configs/nope.yaml"))


# ---------------------------------------------------------------- the state machine
CALLS: list[str] = []


def fake_synth(cfg):
    CALLS.append("synth")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").write_text(json.dumps({"shards": {}}))
    return {"shards": {"total": 1, "incomplete": []}, "totals": {"all": {"problems": 1}}}


def fake_sft(cfg):
    CALLS.append("sft")
    if getattr(fake_sft, "fail", False):
        raise RuntimeError("worker died")
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    return {"out_dir": cfg.out_dir, "steps": 4}


def fake_rl(cfg):
    CALLS.append("rl")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"from": cfg.model}))
    return {"output_dir": str(out), "steps": cfg.steps}


def fake_eval(cfg, log=print):
    CALLS.append("eval")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = {"results": [], "models": [m.name for m in cfg.models],
            "benchmarks": [b.name for b in cfg.benchmarks], "modes": cfg.modes, "ks": cfg.ks}
    (out / "results.json").write_text(json.dumps(data))
    return data


def test_skip_resume_and_rerun_decisions(tmp_path, monkeypatch):
    from selfdebug.pipeline import run as R

    for kind in ("synth", "sft", "eval"):
        monkeypatch.setitem(C.KINDS, kind, (C.KINDS[kind][0], f"{__name__}:fake_{kind}"))
    monkeypatch.setattr("selfdebug.ray_utils.init_ray", lambda *a, **k: None)
    logs: list[str] = []
    cfg = _cfg(tmp_path, "sft_data=[synth]")
    CALLS.clear()
    data = R.run_pipeline(cfg, log=logs.append)
    assert CALLS == ["synth", "sft", "eval"]
    assert [s["status"] for s in data["stages"]] == ["ran", "ran", "ran"]
    assert data["comparison"]["models"] == ["base", "SFT"]
    report = (tmp_path / "run/report.md").read_text()
    assert "## Final comparison" in report and "| r1-sft | ran |" in report
    for step in ("r1-synth", "r1-sft", "eval"):
        assert (tmp_path / "run" / step / "config.yaml").is_file()

    CALLS.clear()
    data = R.run_pipeline(cfg, log=logs.append)
    assert CALLS == [] and {s["status"] for s in data["stages"]} == {"skipped"}

    CALLS.clear()  # a changed eval config: eval alone re-runs, and the log says why
    R.run_pipeline(_cfg(tmp_path, "sft_data=[synth]", "eval.n=3"), log=logs.append)
    assert CALLS == ["eval"]
    assert any("eval: its config changed" in line for line in logs)

    CALLS.clear()  # a changed synth config: everything after it re-runs; sft fails
    fake_sft.fail = True
    changed = _cfg(tmp_path, "sft_data=[synth]", "eval.n=3", "synth.attempts=2")
    with pytest.raises(RuntimeError, match="worker died"):
        R.run_pipeline(changed, log=logs.append)
    assert CALLS == ["synth", "sft"]
    state = json.loads((tmp_path / "run/r1-sft/stage.json").read_text())
    assert state["status"] == "running" and "worker died" in state["last_error"]
    assert any("r1-sft: an earlier stage it reads was re-run" in line for line in logs)

    CALLS.clear()  # the next run resumes the interrupted stage, skipping the finished one
    fake_sft.fail = False
    data = R.run_pipeline(changed, log=logs.append)
    assert CALLS == ["sft", "eval"]
    assert [s["status"] for s in data["stages"]] == ["skipped", "resumed", "ran"]


def test_the_cpu_default_runs_rl_and_evaluates_its_model_beside_base_and_sft(tmp_path,
                                                                           monkeypatch):
    from selfdebug.pipeline import run as R

    for kind in ("synth", "sft", "rl", "eval"):
        monkeypatch.setitem(C.KINDS, kind, (C.KINDS[kind][0], f"{__name__}:fake_{kind}"))
    monkeypatch.setattr("selfdebug.ray_utils.init_ray", lambda *a, **k: None)
    cfg = load_config(PipelineConfig, REPO / "jobs/configs/pipeline-cpu.yaml",
                      [f"run_dir={tmp_path / 'run'}", "sft_data=[synth]"])
    assert cfg.stages == ["synth", "sft", "rl", "eval"]  # the CPU default includes RL
    CALLS.clear()
    data = R.run_pipeline(cfg, log=[].append)
    assert CALLS == ["synth", "sft", "rl", "eval"]
    run = tmp_path / "run"
    assert [(s["step"], s["status"]) for s in data["stages"]] == [
        ("r1-synth", "ran"), ("r1-sft", "ran"), ("rl", "ran"), ("eval", "ran")]
    rl = json.loads((run / "rl" / "stage.json").read_text())
    assert rl["status"] == "complete" and rl["after"] == ["r1-sft", "r1-synth"]
    # RL trained the SFT model on this run's synthesis output, and eval read RL's model
    rl_cfg = (run / "rl" / "config.yaml").read_text()
    assert str(run / "r1-sft" / "model") in rl_cfg and str(run / "r1-synth" / "out") in rl_cfg
    assert json.loads((run / "rl" / "model" / "config.json").read_text())["from"] == \
        str(run / "r1-sft" / "model")
    ev = next(s for s in plan(cfg) if s.kind == "eval")
    assert [(m["name"], m["path"]) for m in ev.data["models"]] == [
        ("base", "tiny"), ("SFT", str(run / "r1-sft" / "model")),
        ("SFT+RL", str(run / "rl" / "model"))]
    assert ev.after == ["r1-sft", "rl"]
    final = data["comparison"]
    assert final["models"] == ["base", "SFT", "SFT+RL"]
    assert all(f"| {m} | Init |" in final["table2"] for m in final["models"])
    assert "| rl | ran |" in (run / "report.md").read_text()


def test_a_resumed_sft_step_keeps_the_fixture_it_trained_on(tmp_path, shared_data, monkeypatch):
    from selfdebug.pipeline import run as R

    monkeypatch.setenv("SELFDEBUG_SHARED_DATA", str(shared_data))
    sft = next(s for s in plan(_cfg(tmp_path, "fixture_problems=3")) if s.kind == "sft")
    out = Path(R.build_fixture(sft))
    built = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert len(built) >= 3 and json.loads((out / "manifest.json").read_text())["shards"]["0"]
    assert R.build_fixture(sft) == str(out)  # the resumed attempt: not written again
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == built
    (out / json.loads((out / "manifest.json").read_text())["shards"]["0"]["files"][0]).unlink()
    R.build_fixture(sft)  # a shard file gone: built again, whole
    assert all(p.is_file() for p in built)
