"""results.json + results.md: a table shaped like LeDex Table 2, per-round and rate tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from selfdebug.evaluate.metrics import final_rows
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
           modes: Sequence[str], ks: Sequence[int]) -> str:
    """Rows model × Init/Refine/Expl+Refine (last round), columns benchmark × pass@k."""
    last = {(r["model"], r["benchmark"], r["mode"]): r for r in final_rows(results, modes)}
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


def markdown(data: dict) -> str:
    models, benchmarks, modes = data["models"], data["benchmarks"], data["modes"]
    ks, rounds, results = data["ks"], data["rounds"], data["results"]
    meta = data.get("metadata") or {}
    head = [f"# Evaluation: {data['name']}", "",
            f"n = {data['n']} samples per task; pass@k in %, unbiased estimator; "
            f"Refine / Expl+Refine: every failing sample replaced by its refinement, "
            f"after round {rounds} (– = not computable, e.g. n < k).", ""]
    if meta:
        head += [f"git `{meta.get('git_revision')}`, seed {meta.get('seed')}, "
                 f"{meta.get('time_utc')}", ""]
    body = ["## pass@k (LeDex Table 2 layout)", "",
            table2(results, models, benchmarks, modes, ks), "",
            "## pass@k per round", "",
            rounds_table(results, models, benchmarks, modes, rounds, ks), "",
            "## Success refinement rate (initially wrong samples fixed, cumulative)", "",
            rate_table(results, models, benchmarks, modes, rounds), "",
            "![pass@k per round](passk_rounds.png)", "",
            "![refinement rate](refine_rate.png)"]
    return "\n".join(head + body)


def write_results(out_dir: str | Path, data: dict, name: str = REPORT_NAME) -> None:
    write_report(out_dir, name, data, markdown(data))
