"""Resume logic of `run_eval` without Ray: the Ray stage is replaced by a local fake that
judges nothing (deterministic verdicts); a crash mid-run, then a re-run."""

from __future__ import annotations

import pytest

import selfdebug.evaluate.pipeline as pipeline
from selfdebug.evaluate.config import BenchmarkSpec, EvalConfig, ModelSpec
from selfdebug.evaluate.stages import _record


class Crash(Exception):
    pass


class FakeStage:
    """Stands in for `stages.run_stage`: sample s of task t passes in round r when
    (s + r) % 3 == 0; raises on ``crash_round``."""

    def __init__(self, crash_round=None):
        self.calls, self.crash_round = [], crash_round

    def __call__(self, rows, generate, problems_ref, programs, cfg):
        self.calls.append([(r["benchmark"], r["mode"], r["round"]) for r in rows])
        if rows and rows[0]["round"] == self.crash_round:
            raise Crash("killed")
        out = []
        for r in rows:
            indices = [r["chain_index"]] if "chain_index" in r else range(cfg.n)
            for s in indices:
                ok = (s + r["round"]) % 3 == 0
                out.append(_record({**r, "sample_index": s, "generated_text": "t",
                                    "explanation": "", "code": f"# {s}", "passed": int(ok),
                                    "status": "passed" if ok else "failed", "total": 1,
                                    "feedback": "f", "runtime": 0.0, "outcomes": "[]"}))
        return out


@pytest.fixture
def cfg(tmp_path, shared_data):
    return EvalConfig(
        out_dir=str(tmp_path / "out"), n=4, rounds=2, ks=[1, 2],
        models=[ModelSpec("a", engine="empty"), ModelSpec("b", engine="oracle")],
        benchmarks=[BenchmarkSpec("HumanEval", str(shared_data / "HumanEval.jsonl.gz"), limit=2),
                    BenchmarkSpec("MBPP", str(shared_data / "mbpp.jsonl"), split="test",
                                  limit=2)])


def _shards(root):
    return {p.relative_to(root): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted((root / "samples").rglob("*.parquet"))}


def test_crash_then_resume_never_resamples(cfg, monkeypatch, tmp_path):
    monkeypatch.setattr(pipeline._Cluster, "problems_ref", lambda self: None)
    monkeypatch.setattr(pipeline, "run_stage", FakeStage(crash_round=2))
    with pytest.raises(Crash):
        pipeline.run_eval(cfg, log=lambda s: None)
    root = tmp_path / "out"
    before = _shards(root)
    # model a: init + round 1 of both modes on both benchmarks; round 2 crashed
    assert len(before) == 2 * (1 + 2) and not (root / "results.json").exists()

    fake = FakeStage()
    monkeypatch.setattr(pipeline, "run_stage", fake)
    data = pipeline.run_eval(cfg, log=lambda s: None)
    # model a: only round 2; model b: everything (3 stages)
    rounds = [{key[2] for key in call} for call in fake.calls]
    assert rounds == [{2}, {0}, {1}, {2}]
    after = _shards(root)
    for path, stamp in before.items():
        assert after[path] == stamp, f"{path} was rewritten"
    assert len(after) == 2 * 2 * (1 + 2 * 2)

    # every model, benchmark, mode and round has a row, and a third run does no work
    keys = {(r["model"], r["benchmark"], r["mode"], r["round"]) for r in data["results"]}
    assert keys == {(m, b, mode, r) for m in "ab" for b in ("HumanEval", "MBPP")
                    for mode, r in [("init", 0), ("refine", 1), ("refine", 2),
                                    ("explain_refine", 1), ("explain_refine", 2)]}
    idle = FakeStage()
    monkeypatch.setattr(pipeline, "run_stage", idle)
    again = pipeline.run_eval(cfg, log=lambda s: None)
    assert idle.calls == [] and again["results"] == data["results"]
    assert pipeline.recompute(root)["matches_results_json"] is True

    # 2 tasks x 4 samples: init passes s = 0, 3; round 1 fixes s = 2 ((s + 1) % 3 == 0)
    init = next(r for r in data["results"] if r["mode"] == "init")
    assert init["pass@1"] == pytest.approx(50.0)
    r1 = next(r for r in data["results"] if (r["mode"], r["round"]) == ("refine", 1))
    assert (r1["wrong_init"], r1["fixed"], r1["pass@1"]) == (4, 2, pytest.approx(75.0))


def test_changed_settings_refuse_to_mix(cfg, monkeypatch):
    from selfdebug.evaluate.store import FingerprintMismatch

    monkeypatch.setattr(pipeline._Cluster, "problems_ref", lambda self: None)
    monkeypatch.setattr(pipeline, "run_stage", FakeStage())
    cfg.rounds = 1
    pipeline.run_eval(cfg, log=lambda s: None)
    cfg.n = 5
    with pytest.raises(FingerprintMismatch):
        pipeline.run_eval(cfg, log=lambda s: None)
