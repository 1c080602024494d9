"""The dataset contract (schemas, writer, manifest, readers over several synthesis outputs),
the SFT example builder on it, the config vocabulary, and the command list."""

from __future__ import annotations

import importlib
import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from selfdebug import dataset
from selfdebug.cli import COMMANDS
from selfdebug.config import ConfigError, SandboxSection, load_config
from selfdebug.evaluate.config import EvalConfig
from selfdebug.synth import shards
from selfdebug.synth.config import SynthConfig
from selfdebug.train.config import SFTConfig
from selfdebug.train.examples import examples_from_records, raw_examples


def _record(task, sample, mode, attempt, correct=True, explanation="why", code="fixed"):
    return {"record_id": f"{task}/{sample}/{mode}/{attempt}", "task_id": task, "source": "t",
            "prompt": f"solve {task}", "entry_point": "f", "sample_index": sample,
            "wrong_code": "wrong", "wrong_status": "failed", "feedback": "it failed",
            "mode": mode, "attempt": attempt,
            "explanation": explanation if mode == "explain_refine" else "",
            "refined_code": code, "correct": correct}


def _sample(task, i, status):
    return {"task_id": task, "source": "t", "prompt": f"solve {task}", "sample_index": i,
            "code": f"code{i}", "status": status, "passed": 1, "total": 1}


def _synth_out(root, debug, samples, shard=0, commit=True):
    files = shards.write_shard(root, shard, samples, debug)
    if commit:
        m = shards.read_manifest(root)
        m["shards"][str(shard)] = {"task_ids": sorted({r["task_id"] for r in samples}),
                                   "files": files}
        shards.write_manifest(root, m)
    return root


def test_writer_schema_and_atomic_files(tmp_path):
    info = dataset.write_rows(tmp_path / "x" / "a.parquet", [{"task_id": "b", "sample_index": 2},
                                                           {"task_id": "a", "sample_index": 1}],
                              dataset.SAMPLE_SCHEMA, sort_key=lambda r: r["task_id"])
    tbl = pq.read_table(tmp_path / "x" / "a.parquet")
    assert tbl.schema == dataset.SAMPLE_SCHEMA and info["rows"] == 2
    assert tbl.column("task_id").to_pylist() == ["a", "b"]  # sorted, missing columns null
    (tmp_path / "x" / ".a.parquet.123.tmp").write_text("partial")  # a killed write
    assert dataset.clean_temp_files(tmp_path) == 1
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["a.parquet"]


def test_readers_take_committed_shards_of_several_outputs(tmp_path):
    a = _synth_out(tmp_path / "a", [_record("T/1", 0, "explain_refine", 0)],
                   [_sample("T/1", 0, "failed"), _sample("T/1", 1, "passed")])
    # an uncommitted shard (the run was killed before the manifest listed it): not data
    _synth_out(a, [_record("T/9", 0, "refine", 0)], [_sample("T/9", 0, "passed")], shard=1,
               commit=False)
    b = _synth_out(tmp_path / "b", [_record("T/1", 0, "explain_refine", 0, code="other")],
                   [_sample("T/1", 0, "passed")])
    debug = dataset.read_debug_records([str(a), str(b)])
    assert [(r["task_id"], r["dataset"]) for r in debug] == [("T/1", str(a)), ("T/1", str(b))]
    assert len(dataset.read_samples([str(a)])) == 2
    ex = raw_examples([str(a), str(b)])
    # the same record id in two outputs stays two examples
    assert Counter(e["kind"] for e in ex) == {"refine": 2, "explain_refine": 2, "generate": 2}
    assert len({e["example_id"] for e in ex}) == len(ex)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        dataset.read_debug_records([str(tmp_path / "missing")])


def test_example_kinds_per_record_and_one_refinement_per_sample():
    debug = [_record("T/1", 0, "explain_refine", 0), _record("T/1", 0, "explain_refine", 1),
             _record("T/1", 1, "explain_refine", 0, explanation="  "),  # empty explanation
             _record("T/1", 2, "refine", 0), _record("T/1", 2, "explain_refine", 1),
             _record("T/1", 3, "explain_refine", 0, correct=False)]
    every = Counter(e["kind"] for e in examples_from_records(debug, []))
    assert every == {"refine": 5, "explain_refine": 3}
    one = examples_from_records(debug, [], one_per_sample=True)
    assert Counter(e["kind"] for e in one) == {"refine": 3, "explain_refine": 2}
    # sample 2: the record with an explanation is preferred (it gives both kinds)
    assert {e["example_id"] for e in one if "/2/" in e["example_id"]} == {
        "refine:T/1/2/explain_refine/1", "explain_refine:T/1/2/explain_refine/1"}
    refine = next(e for e in one if e["kind"] == "refine")
    assert "why" not in refine["answer"] and "fixed" in refine["answer"]
    assert "why" not in json.loads(refine["messages"])[-1]["content"]


def test_config_vocabulary(tmp_path):
    with pytest.raises(ConfigError, match="'output_dir' is now 'out_dir'"):
        load_config(SFTConfig, None, ["output_dir=x"])
    with pytest.raises(ConfigError, match="'sandbox_actors' is now 'sandbox.actors'"):
        load_config(EvalConfig, None, ["sandbox_actors=3"])
    with pytest.raises(ValueError, match="fp16"):  # load_config validates: no silent fp32
        load_config(SFTConfig, None, ["precision=fp16"])
    with pytest.raises(ValueError, match="sandbox.cpus_per_actor"):
        load_config(SynthConfig, None, ["sandbox.cpus_per_actor=0"])
    with pytest.raises(ValueError, match="teacher is set but refiner is 'self'"):
        load_config(SynthConfig, None, ["teacher.base_url=http://x", "teacher.model=m"])
    cfg = load_config(EvalConfig, None, ["sandbox.actors=3", "sandbox.timeout_floor=5",
                                         f"out_dir={tmp_path}"])
    assert isinstance(cfg.sandbox, SandboxSection) and cfg.sandbox.pool_kwargs() == {
        "actors": 3, "workers_per_actor": 1, "cpus_per_actor": 0.25}
    judge = cfg.sandbox.judge_config()
    assert type(judge).__name__ == "SandboxConfig" and judge.timeout_floor == 5.0
    sft = load_config(SFTConfig, None, ["data_dirs=a,b", "out_dir=m"])
    assert sft.data_dirs == ["a", "b"] and sft.resolved_output_dir().name == "m"


def test_every_listed_command_imports():
    assert "serve" not in COMMANDS  # fails on import until the Serve application lands
    for name, (module, _) in COMMANDS.items():
        assert callable(importlib.import_module(module).main), name
