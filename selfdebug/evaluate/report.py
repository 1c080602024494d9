"""results.json + results.md: a table shaped like LeDex Table 2, per-round and rate tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from selfdebug.evaluate.metrics import PAPER_BENCHMARKS, TABLE2_ROUND, rows_at_round, success_rates
from selfdebug.metadata import write_report

LABELS = {"init": "Init", "refine": "Refine", "explain_refine": "Expl+Refine"}
REPORT_NAME = "results"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def _index(results: list[dict]) -> dict[tuple, dict]:
    return {(r["model"], r["benchmark"], r["mode"], r["round"]): r for r in results}


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _header(first: list[str], benchmarks: Sequence[str], sub: Sequence[str]) -> list[str]:
    cells = first + [f"{b} {s}" for b in benchmarks for s in sub]
    return [_row(cells), _row(["---"] * len(first) + ["---:"] * (len(cells) - len(first)))]


def table2(results: list[dict], models: Sequence[str], benchmarks: Sequence[str],
           modes: Sequence[str], ks: Sequence[int], rnd: int = TABLE2_ROUND) -> str:
    """Rows model × Init/Refine/Expl+Refine, columns benchmark × pass@k. Refine rows are
    round ``rnd`` (1, as in LeDex Table 2: one refinement per wrong sample), whatever the
    number of rounds run; the later rounds are in the per-round table."""
    last = {(r["model"], r["benchmark"], r["mode"]): r for r in rows_at_round(results, rnd)}
    lines = _header(["Model", "Method"], benchmarks, [f"pass@{k}" for k in ks])
    for model in models:
        for i, mode in enumerate(["init", *modes]):
            cells = [model if i == 0 else "", LABELS[mode]]
            for b in benchmarks:
                r = last.get((model, b, mode), {})
                cells += [_pct(r.get(f"pass@{k}")) for k in ks]
            lines.append(_row(cells))
    return "\n".join(lines)


def rounds_table(results: list[dict], models: Sequence[str], benchmarks: Sequence[str],
                 modes: Sequence[str], rounds: int, ks: Sequence[int]) -> str:
    idx = _index(results)
    lines = _header(["Model", "Method", "Round"], benchmarks, [f"pass@{k}" for k in ks])
    for model in models:
        for mode, rs in [("init", [0]), *[(m, range(1, rounds + 1)) for m in modes]]:
            for r in rs:
                cells = [model, LABELS[mode], str(r)]
                for b in benchmarks:
                    row = idx.get((model, b, mode, r), {})
                    cells += [_pct(row.get(f"pass@{k}")) for k in ks]
                lines.append(_row(cells))
    return "\n".join(lines)


def rate_table(results: list[dict], models: Sequence[str], benchmarks: Sequence[str],
               modes: Sequence[str], rounds: int) -> str:
    """Success refinement rate (fixed / initially wrong), cumulative after each round."""
    idx = _index(results)
    lines = _header(["Model", "Method", "Round"], benchmarks, ["fixed/wrong", "rate %"])
    for model in models:
        for mode in modes:
            for r in range(1, rounds + 1):
                cells = [model, LABELS[mode], str(r)]
                for b in benchmarks:
                    row = idx.get((model, b, mode, r))
                    if row is None:
                        cells += ["–", "–"]
                        continue
                    rate = row["refine_rate"]
                    cells += [f"{row['fixed']}/{row['wrong_init']}",
                              _pct(None if rate is None else 100 * rate)]
                lines.append(_row(cells))
    return "\n".join(lines)


def success_table(results: list[dict], models: Sequence[str], benchmarks: Sequence[str],
                  modes: Sequence[str], rnd: int = TABLE2_ROUND) -> str:
    """Success refinement rate after round ``rnd`` per benchmark, and the paper's average
    over its four benchmarks (– unless all four were evaluated and had wrong samples)."""
    lines = [_row(["Model", "Method", *benchmarks, f"avg ({', '.join(PAPER_BENCHMARKS)})"]),
             _row(["---", "---"] + ["---:"] * (len(benchmarks) + 1))]
    for s in success_rates(results, models, benchmarks, modes, rnd):
        cells = [s["model"], LABELS[s["mode"]]]
        cells += [_pct(None if s["rates"][b] is None else 100 * s["rates"][b])
                  for b in benchmarks]
        cells.append(_pct(None if s["average"] is None else 100 * s["average"]))
        lines.append(_row(cells))
    return "\n".join(lines)


def markdown(data: dict) -> str:
    models, benchmarks, modes = data["models"], data["benchmarks"], data["modes"]
    ks, rounds, results = data["ks"], data["rounds"], data["results"]
    meta = data.get("metadata") or {}
    head = [f"# Evaluation: {data['name']}", "",
            f"n = {data['n']} samples per task; pass@k in %, unbiased estimator; "
            f"Refine / Expl+Refine: every failing sample replaced by its refinement "
            f"(– = not computable, e.g. n < k). The LeDex Table 2 layout is round "
            f"{TABLE2_ROUND} (one refinement per wrong sample); {rounds} round(s) were run, "
            f"all of them are in the per-round tables.", ""]
    if meta:
        head += [f"git `{meta.get('git_revision')}`, seed {meta.get('seed')}, "
                 f"{meta.get('time_utc')}", ""]
    body = [f"## pass@k (LeDex Table 2 layout, round {TABLE2_ROUND})", "",
            table2(results, models, benchmarks, modes, ks), "",
            f"## Success refinement rate (round {TABLE2_ROUND}: wrong samples fixed / wrong "
            f"samples, %)", "",
            success_table(results, models, benchmarks, modes), "",
            "## pass@k per round", "",
            rounds_table(results, models, benchmarks, modes, rounds, ks), "",
            "## Success refinement rate (initially wrong samples fixed, cumulative)", "",
            rate_table(results, models, benchmarks, modes, rounds), "",
            "![pass@k per round](passk_rounds.png)", "",
            "![refinement rate](refine_rate.png)"]
    return "\n".join(head + body)


def write_results(out_dir: str | Path, data: dict, name: str = REPORT_NAME) -> None:
    """results.{json,md}; the JSON also carries the round-1 success rates (derived from
    ``results``, which stays the one source that --recompute compares)."""
    rates = success_rates(data["results"], data["models"], data["benchmarks"], data["modes"])
    data = {**data, "table2_round": TABLE2_ROUND, "success_rates": rates}
    write_report(out_dir, name, data, markdown(data))
