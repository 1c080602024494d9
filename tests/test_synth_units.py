"""Synthesis building blocks without Ray: rows, dedupe, shards, stats, config."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from selfdebug.config import load_config
from selfdebug.dataset import DEBUG_RECORD_COLUMNS
from selfdebug.synth import rows as R
from selfdebug.synth import shards as S
from selfdebug.synth.config import REPO, SynthConfig, resolve_source
from selfdebug.synth.stats import shard_stats, total_stats


def _sample(i, code, status="failed", task="mbpp/1", error=""):
    return {"task_id": task, "source": "mbpp", "prompt": "p", "entry_point": "f",
            "completion_prefix": "", "shard": 0, "sample_index": i, "code": code,
            "status": status, "passed": 0, "total": 3, "feedback": "fb",
            "generation_error": error, "duplicates": 1, "sample_tokens": 5}


def test_program_rule_prepends_prefix_only_without_entry_point():
    prefix = "def add(a, b):\n    \"\"\"Add.\"\"\"\n"
    assert R.to_program("    return a + b", "add", prefix) == prefix + "    return a + b"
    full = "def add(a, b):\n    return a + b"
    assert R.to_program(full, "add", prefix) == full
    assert R.to_program("x = 1", "add", "") == "x = 1"  # MBPP: no prefix


def test_dedupe_keeps_lowest_index_and_counts():
    rows = [_sample(3, "a = 1  \n"), _sample(0, "b = 2"), _sample(1, "\na = 1"),
            _sample(2, "", error="boom"), _sample(4, "", error="boom")]
    out = R.dedupe(rows)
    assert [(r["sample_index"], r["duplicates"]) for r in out] == [(0, 1), (1, 2), (2, 1), (4, 1)]


def test_refine_requests_and_debug_record_columns():
    wrong = _sample(2, "def f(x):\n    return 0")
    reqs = R.refine_requests(wrong, modes=["refine", "explain_refine"])
    assert [r["mode"] for r in reqs] == ["refine", "explain_refine"]
    assert json.loads(reqs[1]["messages"])[-1]["role"] == "user"
    assert R.refine_requests({**wrong, "status": "passed"}, modes=["refine"]) == []
    assert R.refine_requests({**wrong, "generation_error": "x"}, modes=["refine"]) == []
    # the generation stage's columns: sample_index = the attempt
    row = {**reqs[1], "sample_index": 1, "num_generated_tokens": 7, "generation_error": "",
           "generated_text": "Off by one.\n```python\ndef f(x):\n    return x\n```"}
    row = R.extract_refinement(row)
    assert (row["attempt"], row["sample_index"], row["refine_tokens"]) == (1, 2, 7)
    assert row["explanation"] == "Off by one." and row["refined_code"].startswith("def f")
    row.update(refined_status="passed", refined_passed=3, refined_total=3, refined_feedback="")
    rec = R.debug_record(row, sample_model="m", refine_model="t", sampling_params="{}",
                         pipeline_version="v")
    assert set(DEBUG_RECORD_COLUMNS) <= set(rec) and rec["correct"] is True
    assert rec["record_id"] == "mbpp/1/2/explain_refine/1"
    failed = R.debug_record({**row, "refine_error": "HTTP 500"}, sample_model="m",
                            refine_model="t", sampling_params="{}", pipeline_version="v")
    assert failed["correct"] is False and failed["refined_status"] == "error"
    assert "HTTP 500" in failed["refined_feedback"]


def test_shards_write_exact_columns_and_resume_checks(tmp_path):
    plan = S.plan_shards([f"t{i}" for i in range(5)], 2)
    assert plan == {0: ["t0", "t1"], 1: ["t2", "t3"], 2: ["t4"]}
    debug = [{c: None for c in DEBUG_RECORD_COLUMNS} | {
        "record_id": "t0/0/refine/0", "task_id": "t0", "sample_index": 0, "attempt": 0,
        "correct": False}]
    files = S.write_shard(tmp_path, 0, [_sample(0, "x", task="t0")], debug)
    assert files == ["samples/shard-00000.parquet", "debug/shard-00000.parquet"]
    assert tuple(pq.read_table(tmp_path / files[1]).column_names) == DEBUG_RECORD_COLUMNS
    assert tuple(pq.read_table(tmp_path / files[0]).column_names) == S.SAMPLE_COLUMNS
    manifest = {"fingerprint": "abc", "shards": {"0": {"task_ids": ["t0", "t1"]}}}
    S.write_manifest(tmp_path, manifest)
    assert S.pending_shards(S.read_manifest(tmp_path), plan) == [1, 2]
    S.check_resume(manifest, "abc", plan)
    with pytest.raises(ValueError, match="other settings"):
        S.check_resume(manifest, "xyz", plan)
    with pytest.raises(ValueError, match="other problems"):
        S.check_resume(manifest, "abc", S.plan_shards(["t1", "t0"], 2))


def test_stats_sum_and_rate():
    samples = [_sample(0, "a"), _sample(1, "b", status="passed"), _sample(2, "", error="e")]
    debug = [{"task_id": "mbpp/1", "sample_index": 0, "source": "mbpp", "correct": c,
              "refined_code": "z", "mode": "refine", "refined_status": s, "refine_tokens": 3}
             for c, s in ((True, "passed"), (False, "failed"))]
    totals = total_stats([shard_stats(samples, debug), shard_stats(samples, debug)])
    a = totals["all"]
    assert (a["unique_samples"], a["correct"], a["wrong"], a["generation_errors"]) == (6, 2, 2, 2)
    assert (a["correct_refinements"], a["wrong_fixed"], a["refinement_rate"]) == (2, 2, 1.0)


def test_configs_load_and_source_errors(tmp_path):
    for name in ("synth-cpu", "synth-1gpu", "synth-cluster"):
        cfg = load_config(SynthConfig, REPO / "jobs" / "configs" / f"{name}.yaml")
        cfg.validate()
    cfg = load_config(SynthConfig, REPO / "jobs/configs/synth-cpu.yaml", ["attempts=3"])
    assert cfg.attempts == 3 and cfg.fingerprint() != SynthConfig().fingerprint()
    with pytest.raises(FileNotFoundError, match="SELFDEBUG_SHARED_DATA"):
        resolve_source(str(tmp_path / "missing" / "mbpp.jsonl"))
    with pytest.raises(ValueError, match="modes"):
        SynthConfig(modes=["debug"]).validate()


def test_one_engine_pool_only_for_self_refinement_with_the_same_model():
    from selfdebug.llm.teacher import TeacherConfig
    from selfdebug.synth.pipeline import shares_engines

    assert shares_engines(SynthConfig())
    assert shares_engines(SynthConfig(model="m", refine_model="m"))
    assert not shares_engines(SynthConfig(model="m", refine_model="other"))
    assert not shares_engines(SynthConfig(share_engines=False))
    assert not shares_engines(SynthConfig(refiner="teacher",
                                          teacher=TeacherConfig(base_url="http://x", model="t")))


def test_settings_the_run_would_ignore_are_errors():
    from selfdebug.llm.config import EngineSection
    from selfdebug.llm.teacher import TeacherConfig

    with pytest.raises(ValueError, match="refine_engine"):
        SynthConfig(refine_engine=EngineSection(num_replicas=2)).validate()
    SynthConfig(refine_engine=EngineSection(num_replicas=2), share_engines=False).validate()
    SynthConfig(refine_engine=EngineSection(num_replicas=2), refine_model="other").validate()
    with pytest.raises(ValueError, match="teacher"):
        SynthConfig(teacher=TeacherConfig()).validate()
    with pytest.raises(ValueError, match="sampler_api"):
        SynthConfig(sampler_api=TeacherConfig()).validate()


def test_one_model_resolver(tmp_path, monkeypatch):
    from selfdebug.config import resolve_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    assert resolve_model("m") == str(tmp_path / "m")  # local dir: absolute
    assert resolve_model("org/name") == "org/name"  # a hub name: unchanged
