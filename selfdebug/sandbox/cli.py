"""`selfdebug execute`: judge a file of samples against a benchmark's tests on Ray."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from selfdebug.metadata import run_metadata
from selfdebug.passk import mean_pass_at_k
from selfdebug.sandbox.judge import SandboxConfig
from selfdebug.schema import STATUSES


class SampleError(ValueError):
    pass


def parse_samples(path: Path, problems: dict) -> tuple[list[dict], list[dict]]:
    """(rows to run, rows already judged as errors). Never raises for one bad line."""
    if not path.is_file():
        raise SampleError(f"samples file not found: {path}")
    runnable, invalid = [], []
    per_task: Counter = Counter()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = {"row": lineno, "task_id": None, "sample_index": None}
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise SampleError(f"expected a JSON object, got {type(rec).__name__}")
                task_id = rec.get("task_id")
                if task_id is None:
                    raise SampleError("missing task_id")
                row["task_id"] = str(task_id)
                row["sample_index"] = per_task[row["task_id"]]
                per_task[row["task_id"]] += 1
                problem = problems.get(row["task_id"])
                if problem is None:
                    raise SampleError(f"unknown task_id {row['task_id']!r} for these problems")
                if isinstance(rec.get("solution"), str):
                    row["code"] = rec["solution"]
                elif isinstance(rec.get("completion"), str):
                    row["code"] = problem.program(completion=rec["completion"])
                else:
                    raise SampleError("needs a string 'completion' or 'solution'")
                runnable.append(row)
            except (ValueError, SampleError) as e:
                reason = str(e) if isinstance(e, SampleError) else f"malformed JSON ({e})"
                invalid.append({**row, "status": "error", "passed": 0, "total": 0,
                                "feedback": f"line {lineno}: {reason}", "runtime": 0.0,
                                "outcomes": "[]"})
    if not runnable and not invalid:
        raise SampleError(f"{path}: the samples file is empty")
    return runnable, invalid


def summarize(results: list[dict], ks: list[int], known: set[str] | None = None) -> dict:
    """Status counts and pass@k over the benchmark's tasks (unknown task ids excluded)."""
    by_task: dict[str, list[bool]] = defaultdict(list)
    for r in results:
        if r["task_id"] is not None and (known is None or r["task_id"] in known):
            by_task[r["task_id"]].append(r["status"] == "passed")
    counts = [(len(v), sum(v)) for v in by_task.values()]
    statuses = Counter(r["status"] for r in results)
    out = {"samples": len(results), "tasks": len(by_task),
           "status": {s: statuses.get(s, 0) for s in STATUSES}}
    for k in ks:
        value = mean_pass_at_k(counts, k)
        if value is not None:
            out[f"pass@{k}"] = round(100 * value, 2)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="selfdebug execute", description=__doc__)
    p.add_argument("--problems", required=True, action="append",
                   help="benchmark file, 'humaneval', or hf:NAME (repeat to judge against several)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--samples", type=Path, help="JSONL: task_id + completion|solution")
    src.add_argument("--canonical", action="store_true",
                     help="judge each problem's reference solution (checks a benchmark install)")
    p.add_argument("--out", required=True, type=Path, help="results JSONL (one line per sample)")
    p.add_argument("--summary", type=Path, help="write the summary JSON here too")
    p.add_argument("--split", help="MBPP split: train/validation/test/prompt")
    p.add_argument("--base-only", action="store_true", help="EvalPlus: base inputs only")
    p.add_argument("--k", default="1,10", help="pass@k values (kept where n >= k)")
    p.add_argument("--address", help="Ray cluster address (default: start a local one)")
    p.add_argument("--actors", type=int, default=0, help="sandbox actors (default: CPUs)")
    p.add_argument("--workers-per-actor", type=int, default=2, help="fork servers per actor")
    p.add_argument("--isolation", default="auto", choices=["auto", "bwrap", "degraded", "none"])
    p.add_argument("--timeout-floor", type=float, default=3.0, help="seconds per test, at least")
    p.add_argument("--no-calibrate", action="store_true",
                   help="use the floor instead of deriving limits from canonical runtimes")
    p.add_argument("--stop-on-first-failure", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from selfdebug.problems import FormatError, load_problems

    try:
        problems = {p.task_id: p for source in args.problems
                    for p in load_problems(source, split=args.split, plus=not args.base_only)}
        if args.canonical:
            rows = [{"row": i, "task_id": p.task_id, "sample_index": 0,
                     "code": p.canonical_solution} for i, p in enumerate(problems.values(), 1)]
            invalid = []
        else:
            rows, invalid = parse_samples(args.samples, problems)
        ks = [int(k) for k in args.k.split(",") if k.strip()]
    except (FileNotFoundError, FormatError, SampleError, ValueError) as e:
        print(f"selfdebug execute: error: {e}", file=sys.stderr)
        return 2
    config = SandboxConfig(isolation=args.isolation, timeout_floor=args.timeout_floor,
                           calibrate=not args.no_calibrate,
                           stop_on_first_failure=args.stop_on_first_failure)
    t0 = time.time()
    results, isolation, timing = run_rows(rows, problems, config, args)
    results += invalid
    results.sort(key=lambda r: r["row"])
    elapsed = time.time() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    with open(tmp, "w") as f:
        for r in results:
            f.write(json.dumps({k: v for k, v in r.items() if k != "code"}) + "\n")
    tmp.replace(args.out)
    summary = summarize(results, ks, set(problems))
    summary.update(isolation=isolation, seconds=round(elapsed, 2),
                   samples_per_second=round(len(rows) / elapsed, 1) if elapsed else None,
                   **timing,
                   metadata=run_metadata(config={k: str(v) for k, v in vars(args).items()}))
    print(json.dumps({k: v for k, v in summary.items() if k != "metadata"}, indent=2))
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def run_rows(rows: list[dict], problems: dict, config: SandboxConfig, args) -> tuple[list, str]:
    """Judge rows on sandbox actors, a few chunks in flight per actor; progress on stderr.

    Plain actor calls rather than Ray Data: there is one stage and nothing to stream into,
    and on 2 cores the Data executor's overhead halved throughput (benchmarks/
    sandbox_throughput.py). Results are appended to ``<out>.partial`` as they arrive, so a
    crash keeps what was done. A dead actor is restarted by Ray and its chunk retried; a
    chunk that still fails becomes ``error`` rows with the reason.
    """
    if not rows:
        return [], "", {}
    import ray

    from selfdebug.ray_utils import init_ray, shutdown_ray
    from selfdebug.sandbox.forkserver import detect_isolation

    isolation = detect_isolation(config.isolation).level
    started = time.time()
    connected_here = not ray.is_initialized()
    init_ray(args.address)
    try:
        results, timing = _judge_on_actors(rows, problems, config, args, started)
    finally:
        if connected_here:  # a caller's cluster (tests, a notebook) stays up
            shutdown_ray()
    return results, isolation, timing


def _judge_on_actors(rows, problems, config, args, started) -> tuple[list, dict]:
    import ray

    from selfdebug.sandbox.actor import SandboxActor

    used = {r["task_id"] for r in rows}
    problems_ref = ray.put({t: problems[t] for t in used})
    n_actors = args.actors or max(1, int(ray.cluster_resources().get("CPU", 2)) // 2)
    # Fractional CPUs: the fork servers do the work in their own processes (DESIGN.md).
    actor_cls = ray.remote(SandboxActor).options(num_cpus=0.5, max_restarts=3,
                                                 max_task_retries=2)
    actors = [actor_cls.remote(problems_ref, config, args.workers_per_actor)
              for _ in range(n_actors)]
    ray.get([a.ready.remote() for a in actors])
    ready = time.time()
    chunk = max(8, min(64, len(rows) // (4 * n_actors) or 1))
    todo = iter([rows[i:i + chunk] for i in range(0, len(rows), chunk)])
    pending: dict = {}

    def submit(actor) -> None:
        part = next(todo, None)
        if part is not None:
            ref = actor.run_rows.remote([(r["task_id"], r["code"]) for r in part])
            pending[ref] = (actor, part)

    for actor in actors:
        for _ in range(2):  # one chunk running, one queued: no idle gap between chunks
            submit(actor)
    partial = args.out.with_name(args.out.name + ".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    results, last = [], 0.0
    with open(partial, "w") as f:
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            actor, part = pending.pop(ref)
            try:
                verdicts = ray.get(ref)
            except ray.exceptions.RayError as e:
                reason = f"sandbox actor failed: {type(e).__name__}: {str(e)[:300]}"
                verdicts = [{"status": "error", "passed": 0, "total": 0, "feedback": reason,
                             "runtime": 0.0, "outcomes": []} for _ in part]
            submit(actor)
            for row, verdict in zip(part, verdicts):
                rec = {k: v for k, v in row.items() if k != "code"}
                rec.update({k: v for k, v in verdict.items() if k != "isolation"})
                rec["outcomes"] = json.dumps(rec.get("outcomes", []))
                results.append(rec)
                f.write(json.dumps(rec) + "\n")
            f.flush()
            if time.time() - last > 2 or len(results) == len(rows):
                last = time.time()
                passed = sum(r["status"] == "passed" for r in results)
                print(f"[execute] {len(results)}/{len(rows)} judged, {passed} passed",
                      file=sys.stderr, flush=True)
    os.unlink(partial)
    for actor in actors:
        ray.kill(actor)
    # Start-up (cluster, actors, fork servers) apart from judging: a long run converges to
    # the judging rate.
    timing = {"startup_seconds": round(ready - started, 2),
              "judging_seconds": round(time.time() - ready, 2)}
    return results, timing
