"""Evaluation without a model or Ray: metrics arithmetic, the program rule, the store,
report, recompute and configs."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from selfdebug.config import load_config
from selfdebug.evaluate.config import EvalConfig, ModelSpec, slug, unit_fingerprint
from selfdebug.evaluate.metrics import compute_metrics
from selfdebug.evaluate.oracle import double_rows, reply_for
from selfdebug.evaluate.report import table2
from selfdebug.evaluate.store import COLUMNS, FingerprintMismatch, ResultStore
from selfdebug.evaluate.tasks import program_from_reply

REPO = Path(__file__).resolve().parents[1]


def v(task, s, mode, rnd, ok, model="m", bench="B"):
    return {"model": model, "benchmark": bench, "task_id": task, "sample_index": s,
            "mode": mode, "round": rnd, "status": "passed" if ok else "failed"}


# Two tasks, n = 2. A: [pass, fail], B: [fail, fail].
# refine r1 fixes A/1 and B/0; r2 fixes B/1. explain_refine fixes nothing.
TABLE = [
    v("A", 0, "init", 0, True), v("A", 1, "init", 0, False),
    v("B", 0, "init", 0, False), v("B", 1, "init", 0, False),
    v("A", 1, "refine", 1, True), v("B", 0, "refine", 1, True), v("B", 1, "refine", 1, False),
    v("B", 1, "refine", 2, True),
    v("A", 1, "explain_refine", 1, False), v("B", 0, "explain_refine", 1, False),
    v("B", 1, "explain_refine", 1, False),
    v("A", 1, "explain_refine", 2, False), v("B", 0, "explain_refine", 2, False),
    v("B", 1, "explain_refine", 2, False),
]


def _by(results):
    return {(r["mode"], r["round"]): r for r in results}


def test_closed_form_pass_at_k_and_refinement_rates():
    res = _by(compute_metrics(TABLE, ["m"], ["B"], ["refine", "explain_refine"], 2, [1, 2]))
    init = res[("init", 0)]
    assert init["pass@1"] == pytest.approx(25.0)  # (1/2 + 0) / 2
    assert init["pass@2"] == pytest.approx(50.0)  # (1 + 0) / 2
    assert (init["samples"], init["tasks"], init["wrong_init"]) == (4, 2, 3)
    r1 = res[("refine", 1)]
    assert r1["pass@1"] == pytest.approx(75.0)  # A: 2/2, B: 1/2
    assert r1["pass@2"] == pytest.approx(100.0)
    assert (r1["fixed"], r1["refine_rate"]) == (2, pytest.approx(2 / 3))
    assert (r1["attempted"], r1["fixed_in_round"]) == (3, 2)
    r2 = res[("refine", 2)]
    assert r2["pass@1"] == pytest.approx(100.0) and r2["refine_rate"] == pytest.approx(1.0)
    assert (r2["attempted"], r2["fixed_in_round"], r2["round_fix_rate"]) == (1, 1, 1.0)
    for rnd in (1, 2):
        e = res[("explain_refine", rnd)]
        assert e["pass@1"] == pytest.approx(25.0) and e["refine_rate"] == 0.0
        assert e["attempted"] == 3 and e["round_fix_rate"] == 0.0


def test_pass_at_k_with_larger_n_matches_estimator():
    # One task, n = 5, c = 2: pass@1 = 2/5, pass@2 = 1 - C(3,2)/C(5,2) = 0.7
    rows = [v("T", s, "init", 0, s < 2) for s in range(5)]
    (init,) = compute_metrics(rows, ["m"], ["B"], [], 0, [1, 2, 10])
    assert init["pass@1"] == pytest.approx(40.0)
    assert init["pass@2"] == pytest.approx(100 * (1 - math.comb(3, 2) / math.comb(5, 2)))
    assert init["pass@10"] is None  # n < k: not computable, never a crash


def test_refined_rows_never_replace_a_passing_sample():
    rows = [v("A", 0, "init", 0, True), v("A", 0, "refine", 1, False)]
    res = _by(compute_metrics(rows, ["m"], ["B"], ["refine"], 1, [1]))
    assert res[("refine", 1)]["pass@1"] == 100.0


def test_all_wrong_gives_rate_zero_and_all_right_gives_none():
    wrong = [v("A", s, "init", 0, False) for s in range(2)]
    avail = {("m", "B", "init", 0), ("m", "B", "refine", 1)}
    res = _by(compute_metrics(wrong + [v("A", s, "refine", 1, False) for s in range(2)],
                              ["m"], ["B"], ["refine"], 1, [1], available=avail))
    assert res[("refine", 1)]["refine_rate"] == 0.0
    assert not any(isinstance(x, float) and math.isnan(x) for x in res[("refine", 1)].values())
    right = [v("A", s, "init", 0, True) for s in range(2)]
    res = _by(compute_metrics(right, ["m"], ["B"], ["refine"], 1, [1], available=avail))
    assert res[("refine", 1)]["refine_rate"] is None  # nothing to fix: an empty unit
    assert res[("refine", 1)]["pass@1"] == 100.0


def test_units_not_run_give_no_rows():
    rows = [v("A", 0, "init", 0, False), v("A", 0, "refine", 1, False)]
    avail = {("m", "B", "init", 0), ("m", "B", "refine", 1)}
    got = compute_metrics(rows, ["m"], ["B"], ["refine", "explain_refine"], 3, [1],
                          available=avail)
    assert [(r["mode"], r["round"]) for r in got] == [("init", 0), ("refine", 1)]


def test_success_rates_round_one_and_paper_average():
    from selfdebug.evaluate.metrics import PAPER_BENCHMARKS, success_rates
    from selfdebug.evaluate.report import success_table

    rows = []
    # benchmark i: 4 wrong samples of which i+1 are fixed in round 1, all 4 in round 2
    for i, bench in enumerate(PAPER_BENCHMARKS):
        for s in range(4):
            rows += [v("T", s, "init", 0, False, bench=bench),
                     v("T", s, "refine", 1, s <= i, bench=bench),
                     v("T", s, "refine", 2, True, bench=bench)]
    res = compute_metrics(rows, ["m"], list(PAPER_BENCHMARKS), ["refine"], 2, [1])
    (rate,) = success_rates(res, ["m"], list(PAPER_BENCHMARKS), ["refine"])
    assert rate["rates"] == {b: (i + 1) / 4 for i, b in enumerate(PAPER_BENCHMARKS)}
    assert rate["average"] == pytest.approx((1 + 2 + 3 + 4) / 16)
    assert success_table(res, ["m"], list(PAPER_BENCHMARKS), ["refine"]).splitlines()[2] == \
        "| m | Refine | 25.0 | 50.0 | 75.0 | 100.0 | 62.5 |"
    # three of the four benchmarks: no average, and the table says so with a dash
    three = list(PAPER_BENCHMARKS[:3])
    (rate,) = success_rates(res, ["m"], three, ["refine"])
    assert rate["average"] is None and rate["average_over"] == three
    assert success_table(res, ["m"], three, ["refine"]).splitlines()[2].endswith("| – |")


def test_program_rule():
    prefix = "def add(a, b):\n    '''Add.'''\n"
    body = "```python\n    return a + b\n```"
    assert program_from_reply(body, prefix, "add")[0] == prefix + "    return a + b"
    full = "Because.\n```python\ndef add(a, b):\n    return a + b\n```"
    code, expl = program_from_reply(full, prefix, "add")
    assert code == "def add(a, b):\n    return a + b" and expl == "Because."
    assert program_from_reply(full, "", "")[0].startswith("def add")  # MBPP: as written
    assert program_from_reply("", prefix, "add")[0] == prefix  # empty reply: a stub


def test_test_doubles():
    assert reply_for("empty", "x = 1") == ""
    assert "```python\nx = 1\n```" in reply_for("oracle", "x = 1")
    rows = double_rows({"task_id": "B::A"}, kind="oracle", canonical={"B::A": "x = 1"}, n=3)
    assert [r["sample_index"] for r in rows] == [0, 1, 2]
    assert all(r["generation_error"] == "" for r in rows)
    with pytest.raises(ValueError):
        reply_for("gpt", "")


def _cfg(tmp_path, **kw) -> EvalConfig:
    kw.setdefault("benchmarks", [])
    return EvalConfig(out_dir=str(tmp_path), models=[ModelSpec("m", engine="empty")], **kw)


def _full_row(r):
    out = {c: "" for c in COLUMNS}
    out.update(r, passed=int(r["status"] == "passed"), total=1, runtime=0.0,
               num_generated_tokens=0)
    return out


def test_store_recompute_and_table(tmp_path):
    from selfdebug.evaluate.config import BenchmarkSpec
    from selfdebug.evaluate.pipeline import CONFIG_FILE, recompute, summarize

    cfg = _cfg(tmp_path, n=2, rounds=2, ks=[1, 2])
    cfg.benchmarks = [BenchmarkSpec("B", source="unused")]
    store = ResultStore(tmp_path)
    for mode, rnd in [("init", 0), ("refine", 1), ("refine", 2), ("explain_refine", 1),
                      ("explain_refine", 2)]:
        rows = [_full_row(r) for r in TABLE if (r["mode"], r["round"]) == (mode, rnd)]
        store.write("m", "B", mode, rnd, rows, unit_fingerprint(cfg, "m", "B", mode))
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump(asdict(cfg)))
    data = summarize(cfg, ResultStore(tmp_path))
    (tmp_path / "results.json").write_text(json.dumps(data))
    again = recompute(tmp_path)
    assert again["matches_results_json"] is True
    assert again["results"] == data["results"]
    assert (tmp_path / "recomputed.md").is_file()
    md = table2(data["results"], ["m"], ["B"], ["refine", "explain_refine"], [1, 2])
    lines = md.splitlines()
    assert lines[0] == "| Model | Method | B pass@1 | B pass@2 |"
    # rounds = 2, yet Table 2 shows round 1 (Refine 75.0, not round 2's 100.0): LeDex's
    # Table 2 is one refinement per wrong sample; later rounds are its Figure 4 and are in
    # the per-round table.
    assert lines[2:] == ["| m | Init | 25.0 | 50.0 |", "|  | Refine | 75.0 | 100.0 |",
                         "|  | Expl+Refine | 25.0 | 50.0 |"]
    assert "| m | Refine | 2 | 100.0 | 100.0 |" in (tmp_path / "recomputed.md").read_text()
    # another n on the same directory must not mix with these shards
    other = _cfg(tmp_path, n=3)
    other.benchmarks = cfg.benchmarks
    with pytest.raises(FingerprintMismatch):
        ResultStore(tmp_path).done("m", "B", "init", 0, unit_fingerprint(other, "m", "B", "init"))
    # rounds are not part of the fingerprint: raising them continues the chains
    assert unit_fingerprint(cfg, "m", "B", "refine") == unit_fingerprint(
        _cfg(tmp_path, n=2, rounds=3, ks=[1, 2], benchmarks=cfg.benchmarks), "m", "B", "refine")


def test_configs_load_and_validate():
    for name in ("cpu", "1gpu", "cluster"):
        cfg = load_config(EvalConfig, REPO / "jobs" / "configs" / f"eval-{name}.yaml")
        assert cfg.models and cfg.benchmarks and cfg.ks == [1, 10]
    gpu = load_config(EvalConfig, REPO / "jobs" / "configs" / "eval-1gpu.yaml")
    assert (gpu.n, gpu.rounds, gpu.sampling.temperature) == (100, 3, 0.8)
    assert {b.name for b in gpu.benchmarks} == {"HumanEval", "MBPP", "HumanEval+", "MBPP+"}
    cpu = load_config(EvalConfig, REPO / "jobs" / "configs" / "eval-cpu.yaml",
                      ["n=3", "rounds=1", "sampling.max_tokens=8"])
    assert (cpu.n, cpu.rounds, cpu.sampling.max_tokens) == (3, 1, 8)
    with pytest.raises(ValueError):
        EvalConfig(modes=["rewrite"])
    with pytest.raises(ValueError):
        ModelSpec("x", engine="vllm")  # no path
    assert slug("HumanEval+") == "HumanEval_plus"
    paper = load_config(EvalConfig, REPO / "jobs" / "configs" / "eval-paper.yaml")
    assert (paper.n, paper.rounds, paper.ks, paper.sampling.temperature) == (100, 3, [1, 10], 0.8)
    assert [b.name for b in paper.benchmarks] == ["HumanEval", "MBPP", "HumanEval+", "MBPP+"]
    assert paper.models[0].path == "codellama/CodeLlama-7b-hf"  # the base model, prompted


def test_eval_sampling_section_refuses_n_and_seed():
    from selfdebug.evaluate.config import EvalConfig
    from selfdebug.llm.config import SamplingConfig

    with pytest.raises(ValueError, match="top-level n"):
        EvalConfig(sampling=SamplingConfig(n=5))
    with pytest.raises(ValueError, match="refine_sampling"):
        EvalConfig(refine_sampling=SamplingConfig(seed=1))
