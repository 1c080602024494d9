"""pass@k and refinement rates from verdict rows (pure; no model, no Ray).

A verdict row has ``model, benchmark, task_id, sample_index, mode, round, status``.
*Init* is round 0. In chain ``mode`` after round r, every sample that still failed after
round r-1 is replaced by its round-r refinement (samples that passed stay passed), and
pass@k is computed on the resulting n samples per task (Chen et al.'s estimator).
Success refinement rate after round r = initially wrong samples now passing / initially
wrong samples (None when nothing was wrong); ``round_fix_rate`` is the same for round r
alone (fixed in round r / refined in round r).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from selfdebug.passk import mean_pass_at_k

Key = tuple[str, int]  # (task_id, sample_index)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def pass_at_ks(verdicts: dict[Key, bool], ks: Sequence[int]) -> dict[str, float | None]:
    """{"pass@k": percent or None (some task has fewer than k samples)} over tasks."""
    per_task: dict[str, list[bool]] = defaultdict(list)
    for (task, _), ok in verdicts.items():
        per_task[task].append(ok)
    # Sorted tasks: the same float sum whatever order the rows came in (exact recompute).
    counts = [(len(v), sum(v)) for _, v in sorted(per_task.items())]
    out: dict[str, float | None] = {}
    for k in ks:
        value = mean_pass_at_k(counts, k)
        out[f"pass@{k}"] = None if value is None else 100.0 * value
    return out


def group(rows: Iterable[dict]) -> dict[tuple, dict[Key, bool]]:
    """(model, benchmark, mode, round) → {(task_id, sample_index): passed}."""
    out: dict[tuple, dict[Key, bool]] = defaultdict(dict)
    for r in rows:
        unit = (r["model"], r["benchmark"], r["mode"], int(r["round"]))
        out[unit][(r["task_id"], int(r["sample_index"]))] = r["status"] == "passed"
    return out


def compute_metrics(rows: Iterable[dict], models: Sequence[str], benchmarks: Sequence[str],
                    modes: Sequence[str], rounds: int, ks: Sequence[int],
                    available: set[tuple] | None = None) -> list[dict]:
    """One result row per (model, benchmark, init) and (model, benchmark, mode, round).

    ``available``: the (model, benchmark, mode, round) units that were run (a round with
    nothing left to refine has no rows but was run); None = every unit up to ``rounds``.
    A chain stops at its first unit that was not run.
    """
    units = group(rows)
    results = []
    for model in models:
        for bench in benchmarks:
            if (model, bench, "init", 0) not in (units if available is None else available):
                continue
            init = units.get((model, bench, "init", 0), {})
            wrong0 = {k for k, ok in init.items() if not ok}
            base = {"model": model, "benchmark": bench, "tasks": len({t for t, _ in init}),
                    "samples": len(init), "wrong_init": len(wrong0)}
            results.append({**base, "mode": "init", "round": 0,
                            "correct": len(init) - len(wrong0), **pass_at_ks(init, ks)})
            for mode in modes:
                current = dict(init)
                for r in range(1, rounds + 1):
                    if available is not None and (model, bench, mode, r) not in available:
                        break
                    refined = units.get((model, bench, mode, r), {})
                    failing = [k for k, ok in current.items() if not ok]
                    fixed_now = 0
                    for k in failing:
                        if k in refined:  # a failing sample is replaced by its refinement
                            current[k] = refined[k]
                            fixed_now += refined[k]
                    attempted = sum(k in refined for k in failing)
                    fixed = sum(current[k] for k in wrong0)
                    results.append({
                        **base, "mode": mode, "round": r,
                        "correct": sum(current.values()), **pass_at_ks(current, ks),
                        "attempted": attempted, "fixed_in_round": fixed_now,
                        "round_fix_rate": _ratio(fixed_now, attempted),
                        "fixed": fixed, "refine_rate": _ratio(fixed, len(wrong0)),
                    })
    return results


# LeDex Table 2 reports one refinement per wrong sample (round 1); rounds 2-3 are its
# Figure 4. Its success refinement rate is also averaged over these four benchmarks.
TABLE2_ROUND = 1
PAPER_BENCHMARKS = ("HumanEval", "MBPP", "HumanEval+", "MBPP+")


def rows_at_round(results: list[dict], rnd: int = TABLE2_ROUND) -> list[dict]:
    """Init plus round ``rnd`` of each mode (absent where that round was not run)."""
    return [r for r in results if r["mode"] == "init" or r["round"] == rnd]


def success_rates(results: list[dict], models: Sequence[str], benchmarks: Sequence[str],
                  modes: Sequence[str], rnd: int = TABLE2_ROUND) -> list[dict]:
    """Per (model, mode): the success refinement rate after round ``rnd`` on each benchmark
    (None: not run, or nothing was wrong) and its unweighted mean over the paper's four
    benchmarks, computed only when all four have a rate (``average`` None otherwise, with
    ``average_over`` naming the benchmarks that had one)."""
    idx = {(r["model"], r["benchmark"], r["mode"], r["round"]): r for r in results}
    out = []
    for model in models:
        for mode in modes:
            rates = {b: (idx.get((model, b, mode, rnd)) or {}).get("refine_rate")
                     for b in benchmarks}
            have = [b for b in PAPER_BENCHMARKS if rates.get(b) is not None]
            avg = (sum(rates[b] for b in have) / len(have)
                   if len(have) == len(PAPER_BENCHMARKS) else None)
            out.append({"model": model, "mode": mode, "round": rnd, "rates": rates,
                        "average": avg, "average_over": have})
    return out
