"""Synthesis throughput with the tiny model: streaming vs stage-by-stage vs generation only.

    python benchmarks/synth_throughput.py [--problems 24] [--n 8] [--attempts 1] [--order abc]

(a) the streaming pipeline (`selfdebug synth`, one lazy Ray Data dataset);
(b) the same work stage by stage (each stage materialized before the next starts);
(c) vLLM generation alone: the same initial prompts (n each) and the same refine prompts
    (taken from (a)'s output, K attempts each), same seeds, so the same token counts.
Every figure includes engine start-up (each run starts its own engine actors), as a real
job does; an untimed small run first starts Ray's worker processes, which all three then
reuse. Prints samples/s (initial samples per wall second) and the ratios a/b and a/c.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq

from selfdebug.config import load_config, resolve_model
from selfdebug.synth.config import REPO, SynthConfig


def _timed_pipeline(cfg: SynthConfig) -> tuple[float, dict]:
    from selfdebug.synth import shards
    from selfdebug.synth.pipeline import run_pipeline
    from selfdebug.synth.stats import total_stats

    t0 = time.time()
    run_pipeline(cfg)
    wall = time.time() - t0
    stats = [e["stats"] for e in shards.read_manifest(cfg.out_dir)["shards"].values()]
    return wall, total_stats(stats)["all"]


def _generation_only(cfg: SynthConfig, debug_dir: Path) -> tuple[float, int]:
    import ray

    from selfdebug.llm.engine_pool import EnginePool
    from selfdebug.llm.prompts import REFINE_MESSAGES
    from selfdebug.synth import pipeline, rows

    problems, _ = pipeline.load_plan(cfg)
    model = resolve_model(cfg.model)
    gen_rows = [{"messages": rows.generate_request(p.prompt)} for p in problems.values()]
    seen, ref_rows = set(), []
    for f in sorted(debug_dir.glob("*.parquet")):
        for d in pq.read_table(f).to_pylist():
            key = (d["task_id"], d["sample_index"], d["mode"])
            if key in seen:
                continue
            seen.add(key)
            messages = REFINE_MESSAGES[d["mode"]](d["prompt"], d["wrong_code"], d["feedback"])
            ref_rows.append({"messages": json.dumps(messages)})
    t0 = time.time()  # engine start-up included, as in (a) and (b)
    # the pipeline's own stages on the same engines: one shared pool, or a pool for
    # sampling and ray.data.llm engines for refinement (share_engines=false)
    pool = EnginePool.start(cfg.engine.for_model(model), name="bench")
    try:
        tokens = ["num_generated_tokens"]
        ds = pipeline.sample_stage(cfg, pool)(ray.data.from_items(gen_rows)).select_columns(tokens)
        if ref_rows:
            refine = pipeline.refine_stage(cfg, pool, model)
            ds = ds.union(refine(ray.data.from_items(ref_rows)).select_columns(tokens))
        total = sum(int(t) for batch in ds.iter_batches(batch_format="numpy")
                    for t in batch["num_generated_tokens"])
    finally:
        pool.shutdown()
    return time.time() - t0, total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=24)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--attempts", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", default="")
    parser.add_argument("--json", default="", help="also write the numbers here")
    parser.add_argument("--order", default="abc", help="run order (c reuses a's prompts)")
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip the untimed small run that starts Ray's workers first")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="more config overrides for all three runs (engine.batch_size=8)")
    args = parser.parse_args(argv)

    from selfdebug.ray_utils import init_ray

    init_ray()
    root = Path(args.out or tempfile.mkdtemp(prefix="synth-bench-"))
    cfg = load_config(SynthConfig, REPO / "jobs" / "configs" / "synth-cpu.yaml", [
        f"limit={args.problems}", "shard_size=4", f"sampling.n={args.n}",
        f"attempts={args.attempts}", "modes=[explain_refine]",
        f"sampling.max_tokens={args.max_tokens}",
        f"refine_sampling.max_tokens={args.max_tokens}",
        # One engine per core: the CPU default's single engine suits its small run, a
        # workload this size amortizes a second engine's start.
        "engine.num_replicas=2", *args.set])
    a_cfg = replace(cfg, out_dir=str(root / "streaming"))
    b_cfg = replace(cfg, out_dir=str(root / "staged"), staged=True)
    if sorted(args.order) != ["a", "b", "c"] or args.order.index("a") > args.order.index("c"):
        parser.error("--order: a permutation of abc with a before c (c reuses a's prompts)")
    if not args.no_warmup:
        # Untimed: Ray's worker processes start and import Ray Data here, so the first
        # timed run does not pay for what the later ones reuse.
        _timed_pipeline(replace(cfg, out_dir=str(root / "warmup"), limit=2,
                                sampling=replace(cfg.sampling, n=2, max_tokens=8),
                                refine_sampling=replace(cfg.refine_sampling, max_tokens=8)))
    for which in args.order:
        if which == "a":
            wall_a, stats_a = _timed_pipeline(a_cfg)
        elif which == "b":
            wall_b, stats_b = _timed_pipeline(b_cfg)
        else:
            wall_c, tokens_c = _generation_only(cfg, root / "streaming" / "debug")
    samples = stats_a["samples_generated"]
    res = {
        "problems": args.problems, "n": args.n, "attempts": args.attempts,
        "max_tokens": args.max_tokens, "samples": samples, "order": args.order,
        "warmup": not args.no_warmup,
        "overrides": args.set,
        "debug_records": stats_a["debug_records"],
        "tokens": {"a": stats_a["sample_tokens"] + stats_a["refine_tokens"],
                   "b": stats_b["sample_tokens"] + stats_b["refine_tokens"], "c": tokens_c},
        "wall_s": {"a_streaming": wall_a, "b_staged": wall_b, "c_generation_only": wall_c},
        "samples_per_s": {"a_streaming": samples / wall_a, "b_staged": samples / wall_b,
                          "c_generation_only": samples / wall_c},
        "ratio_a_over_b": wall_b / wall_a, "ratio_a_over_c": wall_c / wall_a,
    }
    print(json.dumps(res, indent=2))
    for k, v in res["samples_per_s"].items():
        print(f"{k:>20}: {v:7.2f} samples/s  ({res['wall_s'][k]:.1f} s)")
    print(f"a/b = {res['ratio_a_over_b']:.2f} (want > 1), a/c = {res['ratio_a_over_c']:.2f} "
          "(want ≥ 0.85)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
