"""RL step time: where a step's time goes, the overlapped loop against the synchronous one,
and generation inside RL against the same engine alone.

One vLLM engine (the tiny model unless --model), one run each of the synchronous and the
overlapped loop (same config, items, seeds, steps), the learner in this process. Printed:
- time per step split into generation, rewards (waiting for them after generation),
  learning and weight sync, and weight sync's share (target < 5 %);
- steps/s overlapped ÷ synchronous (baseline: the synchronous loop);
- generated tokens/s inside the synchronous loop ÷ the same engine generating the same
  requests (same prompts, seeds, sampling) with nothing else running (baseline: alone).
The first step of each run is left out (start-up).

    python benchmarks/rl_step.py [--steps 8] [--items 8] [--n 4] [--max-tokens 64] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time

SPLIT = ("generation_s", "rewards_s", "learning_s", "weight_sync_s")


def _config(args, name: str, overlap: bool):
    from selfdebug.config import load_config
    from selfdebug.rl.config import RLConfig

    sets = [f"model={args.model}", f"steps={args.steps}", f"items_per_step={args.items}",
            f"sampling.n={args.n}", f"sampling.max_tokens={args.max_tokens}",
            f"mini_batch_size={args.items * args.n}", f"micro_batch_size={args.micro}",
            "use_ray_train=false", "precision=fp32", "reward.embedding_model=minilm",
            f"storage_path={args.out}", f"name={name}", f"overlap={str(overlap).lower()}",
            f"checkpoint_every={10**6}", "fixture_problems=32", "seed=0", *args.set]
    return load_config(RLConfig, None, sets)


def _records(cfg) -> list[dict]:
    from selfdebug.train.metrics import read_metrics

    return [r for r in read_metrics(cfg.resolved_log_dir()) if r.get("split") == "train"][1:]


def _alone(pool, cfg) -> tuple[float, int]:
    """(seconds, tokens) for the synchronous run's requests on the engine alone."""
    from selfdebug.rl.data import load_items
    from selfdebug.rl.rollout import build_requests, items_for_step

    items, _ = load_items(cfg)
    sampling = {k: v for k, v in cfg.sampling.params("", 0).items() if k != "seed"}
    sampling["n"] = cfg.sampling.n
    seconds, tokens = 0.0, 0
    for step in range(1, cfg.steps):  # the steps the RL figures count
        idx = items_for_step(len(items), cfg.items_per_step, cfg.seed, step)
        reqs = [r for _, r in build_requests(items, idx, step, list(cfg.modes), sampling,
                                             cfg.seed)]
        t0 = time.perf_counter()
        outs = asyncio.run(pool.agenerate(reqs))
        seconds += time.perf_counter() - t0
        tokens += sum(len(c.token_ids) for o in outs for c in o)
    return seconds, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--micro", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--out", default=tempfile.mkdtemp(prefix="rl-bench-"))
    ap.add_argument("--set", nargs="*", default=[], help="extra key=value RL settings")
    args = ap.parse_args()

    from selfdebug.config import resolve_model
    from selfdebug.llm.engine_pool import EnginePool
    from selfdebug.ray_utils import init_ray
    from selfdebug.rl.cli import run

    args.model = resolve_model(args.model)
    init_ray(num_cpus=6, _temp_dir=tempfile.mkdtemp(prefix="rl-bench-ray-"))
    sync_cfg = _config(args, "sync", False)
    over_cfg = _config(args, "overlap", True)
    pool = EnginePool.start(sync_cfg.engine.for_model(args.model), name="rl-bench")
    pool.wait_ready()
    try:
        run(sync_cfg, pool=pool)
        run(over_cfg, pool=pool)
        pool.reload_weights(args.model)  # the starting weights again, as the sync run had
        alone_s, alone_tokens = _alone(pool, sync_cfg)
    finally:
        pool.shutdown()

    sync, over = _records(sync_cfg), _records(over_cfg)
    split = {k: statistics.mean(r[k] for r in sync) for k in SPLIT}
    step_s = statistics.mean(r["step_s"] for r in sync)
    over_step_s = statistics.mean(r["step_s"] for r in over)
    rl_tps = sum(r["generated_tokens"] for r in sync) / sum(r["generation_s"] for r in sync)
    alone_tps = alone_tokens / alone_s
    out = {
        "steps_counted": len(sync), "answers_per_step": args.items * args.n,
        "sync_step_s": step_s, "split_s": split,
        "weight_sync_share": split["weight_sync_s"] / step_s,
        "overlap_step_s": over_step_s,
        "overlap_vs_sync_steps_per_s": step_s / over_step_s,
        "generation_tokens_per_s_in_rl": rl_tps, "generation_tokens_per_s_alone": alone_tps,
        "generation_in_rl_vs_alone": rl_tps / alone_tps,
    }
    print(json.dumps(out, indent=2))
    print(f"\nsynchronous step {step_s:.2f} s: " + ", ".join(
        f"{k.removesuffix('_s')} {v:.2f} s ({v / step_s:.0%})" for k, v in split.items()))
    print(f"weight sync share {out['weight_sync_share']:.1%} (target < 5 %)")
    print(f"overlapped / synchronous steps per s: {out['overlap_vs_sync_steps_per_s']:.2f}x "
          f"({over_step_s:.2f} s vs {step_s:.2f} s per step)")
    print(f"generation in RL / alone: {out['generation_in_rl_vs_alone']:.2f}x "
          f"({rl_tps:.0f} vs {alone_tps:.0f} tokens/s)")


if __name__ == "__main__":
    main()
