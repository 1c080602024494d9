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
    with open(path, "rb") as f:  # decoded line by line: one bad line is one error row
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            row = {"row": lineno, "task_id": None, "sample_index": None}
            try:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise SampleError(f"{path}:{lineno}: not UTF-8 (byte {e.start}: "
                                      f"{e.reason}); re-encode the file as UTF-8") from None
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
                reason = reason.removeprefix(f"{path}:{lineno}: ")
                invalid.append({**row, "status": "error", "passed": 0, "total": 0,
                                "feedback": f"{path.name} line {lineno}: {reason}", "runtime": 0.0,
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


class OutputError(OSError):
    pass


# Exit codes: 0 done; 2 bad input or output path (nothing started); 3 the results could not
# be written (every verdict is kept in <out>.partial, named in the message).
EXIT_BAD_INPUT, EXIT_WRITE_FAILED = 2, 3


def check_output_path(path: Path, what: str) -> None:
    """Refuse an output path that cannot become a file before anything is started."""
    if path.is_dir():
        raise OutputError(f"{what} {path} is a directory; give a file path")
    parent = path.parent
    for p in (parent, *parent.parents):
        if p.exists():
            if not p.is_dir():
                raise OutputError(f"{what} {path}: {p} is a file, not a directory")
            if not os.access(p, os.W_OK | os.X_OK):
                raise OutputError(f"{what} {path}: cannot create files in {p} (permissions)")
            return


def write_durably(path: Path, text_lines) -> None:
    """Write-then-rename with fsync: the file is either complete or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as f:
            for line in text_lines:
                f.write(line)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from selfdebug.problems import FormatError, load_problems

    try:
        check_output_path(args.out, "--out")
        if args.summary:
            check_output_path(args.summary, "--summary")
        problems = {p.task_id: p for source in args.problems
                    for p in load_problems(source, split=args.split, plus=not args.base_only)}
        if args.canonical:
            rows = [{"row": i, "task_id": p.task_id, "sample_index": 0,
                     "code": p.canonical_solution} for i, p in enumerate(problems.values(), 1)]
            invalid = []
        else:
            rows, invalid = parse_samples(args.samples, problems)
        ks = [int(k) for k in args.k.split(",") if k.strip()]
    except (FileNotFoundError, FormatError, SampleError, OutputError, ValueError) as e:
        print(f"selfdebug execute: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    config = SandboxConfig(isolation=args.isolation, timeout_floor=args.timeout_floor,
                           calibrate=not args.no_calibrate,
                           stop_on_first_failure=args.stop_on_first_failure)
    partial = args.out.with_name(args.out.name + ".partial")
    t0 = time.time()
    results, isolation, timing = run_rows(rows, problems, config, args, partial)
    results += invalid
    results.sort(key=lambda r: r["row"])
    elapsed = time.time() - t0
    summary = summarize(results, ks, set(problems))
    summary.update(isolation=isolation, seconds=round(elapsed, 2),
                   samples_per_second=round(len(rows) / elapsed, 1) if elapsed else None,
                   **timing,
                   metadata=run_metadata(config={k: str(v) for k, v in vars(args).items()}))
    try:
        # The partial file goes only once the final one is durable: a full disk or a bad
        # path now loses nothing already judged.
        write_durably(args.out, (json.dumps({k: v for k, v in r.items() if k != "code"}) + "\n"
                                 for r in results))
        partial.unlink(missing_ok=True)
        if args.summary:
            write_durably(args.summary, [json.dumps(summary, indent=2) + "\n"])
    except OSError as e:
        kept = f"; every verdict so far is in {partial}" if partial.exists() else ""
        print(f"selfdebug execute: error: could not write results: {e}{kept}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    print(json.dumps({k: v for k, v in summary.items() if k != "metadata"}, indent=2))
    return 0


def run_rows(rows: list[dict], problems: dict, config: SandboxConfig, args,
             partial: Path) -> tuple[list, str, dict]:
    """Judge rows on a ``SandboxActorPool``; verdicts are appended to ``partial`` as they
    arrive (a crash keeps what was done), progress goes to stderr."""
    if not rows:
        return [], "", {}
    import ray

    from selfdebug.ray_utils import init_ray, shutdown_ray
    from selfdebug.sandbox.actor_pool import SandboxActorPool

    started = time.time()
    connected_here = not ray.is_initialized()
    init_ray(args.address)
    try:
        used = {r["task_id"] for r in rows}
        n_actors = args.actors or max(1, int(ray.cluster_resources().get("CPU", 2)) // 2)
        pool = SandboxActorPool({t: problems[t] for t in used}, config, actors=n_actors,
                                workers_per_actor=args.workers_per_actor,
                                chunk_size=max(8, min(64, len(rows) // (4 * n_actors) or 1)))
        ready = time.time()
        try:
            results = _judge_to_partial(pool, rows, partial)
        finally:
            pool.shutdown()
    finally:
        if connected_here:  # a caller's cluster (tests, a notebook) stays up
            shutdown_ray()
    # Start-up (cluster, actors, fork servers) apart from judging: a long run converges to
    # the judging rate.
    timing = {"startup_seconds": round(ready - started, 2),
              "judging_seconds": round(time.time() - ready, 2),
              "actors_restarted": pool.stats["actors_restarted"],
              "chunks_retried": pool.stats["chunks_retried"],
              "rows_errored_by_actor_failures": pool.stats["rows_errored"]}
    return results, pool.isolation, timing


def _judge_to_partial(pool, rows: list[dict], partial: Path) -> list[dict]:
    partial.parent.mkdir(parents=True, exist_ok=True)
    results, last = [], 0.0
    with open(partial, "w") as f:
        for rec in pool.judge(rows):
            rec["outcomes"] = json.dumps(rec.get("outcomes", []))
            results.append(rec)
            f.write(json.dumps(rec) + "\n")
            if time.time() - last > 2 or len(results) == len(rows):
                f.flush()
                last = time.time()
                passed = sum(r["status"] == "passed" for r in results)
                print(f"[execute] {len(results)}/{len(rows)} judged, {passed} passed",
                      file=sys.stderr, flush=True)
    return results
