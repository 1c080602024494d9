"""Counts of one shard (kept in the manifest) and their sum over shards (the report).

Table 1 of LeDex, per source: problems, unique samples, correct, wrong, correct
refinements, refinement rate. Definitions used here:
- *wrong*: unique samples that failed and were sent to refinement (failed generations are
  counted apart, as ``generation_errors``);
- *correct_refinements*: debug records with ``correct=True``;
- *wrong_fixed*: wrong samples with at least one correct refinement;
- *refinement_rate*: wrong_fixed / wrong (DESIGN.md's success refinement rate).
"""

from __future__ import annotations

from collections import Counter, defaultdict


def _source_stats(samples: list[dict], debug: list[dict]) -> dict:
    wrong = [s for s in samples if s["status"] != "passed" and not s.get("generation_error")]
    fixed = {(d["task_id"], d["sample_index"]) for d in debug if d["correct"]}
    distinct = {(d["task_id"], d["sample_index"], d["refined_code"]) for d in debug
                if d["correct"]}
    return {
        "problems": len({s["task_id"] for s in samples}),
        "samples_generated": sum(int(s.get("duplicates") or 1) for s in samples),
        "unique_samples": len(samples),
        "correct": sum(s["status"] == "passed" for s in samples),
        "wrong": len(wrong),
        "generation_errors": sum(bool(s.get("generation_error")) for s in samples),
        "debug_records": len(debug),
        "correct_refinements": sum(bool(d["correct"]) for d in debug),
        "distinct_correct_refinements": len(distinct),
        "wrong_fixed": len(fixed),
        "refine_errors": sum(bool(d.get("refine_error")) for d in debug),
        "sample_tokens": sum(int(s.get("sample_tokens") or 0) for s in samples),
        "refine_tokens": sum(int(d.get("refine_tokens") or 0) for d in debug),
        "sample_status": dict(Counter(s["status"] for s in samples)),
        "refined_status": dict(Counter(d["refined_status"] for d in debug)),
        "by_mode": {m: {"records": sum(d["mode"] == m for d in debug),
                        "correct": sum(d["mode"] == m and bool(d["correct"]) for d in debug)}
                    for m in sorted({d["mode"] for d in debug})},
    }


def shard_stats(samples: list[dict], debug: list[dict]) -> dict:
    """source → counts for one shard."""
    by_s, by_d = defaultdict(list), defaultdict(list)
    for s in samples:
        by_s[s["source"]].append(s)
    for d in debug:
        by_d[d["source"]].append(d)
    return {src: _source_stats(by_s[src], by_d[src]) for src in sorted(by_s)}


def _add_counter(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _add_counter(out.get(k, {}), v) if isinstance(v, dict) else out.get(k, 0) + v
    return out


def total_stats(per_shard: list[dict]) -> dict:
    """Sum shard stats per source, plus an ``all`` row; adds the refinement rate."""
    totals: dict[str, dict] = {}
    for stats in per_shard:
        for src, counts in stats.items():
            totals[src] = _add_counter(totals.get(src, {}), counts)
    if totals:
        everything: dict = {}
        for counts in totals.values():
            everything = _add_counter(everything, counts)
        totals["all"] = everything
    for counts in totals.values():
        counts["refinement_rate"] = (counts["wrong_fixed"] / counts["wrong"]
                                     if counts.get("wrong") else 0.0)
    return totals
