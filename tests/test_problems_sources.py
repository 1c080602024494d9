"""Synthesis from several problem sources in one run, each with its own split."""

from __future__ import annotations

import pytest
import yaml

from selfdebug.config import load_config
from selfdebug.synth.config import SynthConfig
from selfdebug.synth.pipeline import load_plan


def _cfg(tmp_path, body: dict, overrides=()) -> SynthConfig:
    path = tmp_path / "synth.yaml"
    path.write_text(yaml.safe_dump(body))
    return load_config(SynthConfig, path, list(overrides))


def test_several_sources_with_a_split_each(shared_data, tmp_path):
    cfg = _cfg(tmp_path, {"out_dir": str(tmp_path / "out"), "shard_size": 50, "sources": [
        {"source": str(shared_data / "mbpp.jsonl"), "split": "train"},
        {"source": str(shared_data / "apps_test_mapcoder_subset.jsonl"), "split": "test",
         "limit": 5},
        {"source": str(shared_data / "codecontests_graph_sample200.jsonl"), "limit": 7}]})
    problems, plan = load_plan(cfg)
    sources = [p.source for p in problems.values()]
    assert sources.count("mbpp") == 374 and sources.count("apps") == 5
    assert sources.count("codecontests") == 7 and len(problems) == 386
    assert sum(len(s) for s in plan.values()) == 386 and len(plan) == 8
    # the run's fingerprint covers its sources; a single-source run keeps its old one
    other = _cfg(tmp_path, {"sources": [{"source": str(shared_data / "mbpp.jsonl"),
                                         "split": "test"}]})
    assert other.fingerprint() != cfg.fingerprint()
    assert SynthConfig().fingerprint() == SynthConfig(sources=[]).fingerprint()


def test_source_errors_name_the_problem(shared_data, tmp_path):
    mbpp = str(shared_data / "mbpp.jsonl")
    with pytest.raises(ValueError, match="sources replaces source/split/limit"):
        _cfg(tmp_path, {"split": "test", "sources": [{"source": mbpp}]})
    twice = _cfg(tmp_path, {"sources": [{"source": mbpp, "split": "prompt"},
                                        {"source": mbpp, "split": "prompt"}]})
    with pytest.raises(ValueError, match="task id 'Mbpp/1' appears twice"):
        load_plan(twice)
    wrong_split = _cfg(tmp_path, {"sources": [
        {"source": str(shared_data / "apps_test_mapcoder_subset.jsonl"), "split": "train"}]})
    with pytest.raises(ValueError, match="does not say 'train'"):
        load_plan(wrong_split)


def test_paper_config_reads_three_sources_with_their_train_splits():
    from pathlib import Path

    cfg = load_config(SynthConfig, Path(__file__).resolve().parents[1] / "jobs" / "configs"
                      / "synth-paper.yaml")
    assert [(s.source, s.split) for s in cfg.problem_sources()] == [
        ("../shared/data/mbpp.jsonl", "train"), ("apps", "train"), ("code_contests", "train")]
    assert (cfg.sampling.n, cfg.sampling.temperature, cfg.refiner) == (20, 1.0, "teacher")
    assert cfg.model == "codellama/CodeLlama-7b-hf"
