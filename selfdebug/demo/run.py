"""The demo run: base model, self-bootstrap rounds for each arm, held-out evaluation.

    base model (cached) ── evaluate ──► synthesis on train problems (samples + repairs)
      round r, per arm: SFT(previous model, examples) ──► load weights into the engines
                        ──► evaluate on held-out ──► synthesis for round r + 1

Arms: ``method`` trains on correct initial samples + verified repairs; the
``generation_only`` control trains on the correct initial samples alone. Round 1's data
of both arms comes from the same base-model samples. One Ray cluster, one engine pool,
one sandbox actor and one trainer process (`train.resident`) serve the whole run.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from selfdebug.demo.base_model import pretrained_base, sft_config, write_examples
from selfdebug.demo.config import DemoConfig
from selfdebug.demo.cputime import CpuMeter
from selfdebug.demo.engines import Engines, Sampling, Sandbox
from selfdebug.demo.rollout import evaluate, repair, sample
from selfdebug.llm import prompts
from selfdebug.train.resident import ResidentTrainer
from selfdebug.world.cli import write_jsonl
from selfdebug.world.generate import generate_world, problems_of


class Timer:
    """Wall and CPU seconds per stage (CPU of this process and every Ray process).

    ``cpu_of_ray`` False (the run joined a cluster whose processes are not this one's):
    CPU is not measured, and stages say None rather than this process's share."""

    def __init__(self, log: Callable[[str], None]):
        self.stages: list[dict] = []
        self.log = log
        self.cpu = CpuMeter()
        self.cpu_of_ray = True

    def __call__(self, stage: str, fn: Callable, *args, **kwargs):
        t0, c0 = time.time(), self.cpu.seconds()
        try:
            return fn(*args, **kwargs)
        finally:
            wall, cpu = time.time() - t0, self.cpu.seconds() - c0
            self.stages.append({"stage": stage, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2)})
            self.log(f"[{stage}] {wall:.1f} s wall"
                     + (f", {cpu:.1f} s CPU" if self.cpu_of_ray else ""))

    def cpu_seconds(self) -> float | None:
        """CPU of the whole run; None where it was not measured (every stage's too)."""
        if not self.cpu_of_ray:
            for s in self.stages:
                s["cpu_s"] = None
            return None
        return round(sum(s["cpu_s"] for s in self.stages), 1)


def synthesize(engines, sandbox, problems, by_id, cfg: DemoConfig, seed: int, tag: str,
               attempts: int) -> dict:
    """Samples of the current model on train problems; up to ``attempts`` repairs per
    wrong one, in stages of 1, 1, 2, 4, ... attempts that stop at the first verified
    repair of its program: SFT keeps the first verified repair of each distinct wrong
    program (a sample identical to another stops with it), and attempt k is the same
    request (same seed) whether or not it runs, so the examples are those of all
    ``attempts``."""
    s = Sampling(cfg.synth.temperature, cfg.synth.top_p, cfg.synth.max_tokens, seed)
    samples = sample(engines, sandbox, problems, cfg.synth.samples, s, f"{tag}:synth")
    todo = [r for r in samples if r["status"] != "passed"]
    repairs: list[dict] = []
    done = 0
    while todo and done < attempts:
        size = min(max(1, done), attempts - done)
        got = repair(engines, sandbox, by_id, todo, size, s, f"{tag}:synth",
                     first_attempt=done)
        repairs += got
        fixed = {(r["task_id"], r["wrong_code"]) for r in got if r["status"] == "passed"}
        todo = [w for w in todo if (w["task_id"], w["code"]) not in fixed]
        done += size
    return {"samples": samples, "repairs": repairs}


def examples_of(data: dict, by_id: dict, with_repairs: bool) -> list[dict]:
    """SFT examples: each distinct correct sample, and each distinct verified repair."""
    out, seen = [], set()
    for r in data["samples"]:
        key = ("g", r["task_id"], r["code"])
        if r["status"] == "passed" and key not in seen:
            seen.add(key)
            out.append({"example_id": f"generate:{r['task_id']}:{r['sample_index']}",
                        "task_id": r["task_id"], "kind": "generate",
                        "messages": json.dumps(prompts.generate_messages(by_id[r["task_id"]].prompt)),
                        "answer": prompts.assistant_answer(r["code"])})
    for r in data["repairs"] if with_repairs else ():
        # one verified repair per wrong program: what SFT time allows on 2 cores
        key = ("r", r["task_id"], r["wrong_code"])
        if r["status"] == "passed" and key not in seen:
            seen.add(key)
            messages = prompts.refine_messages(by_id[r["task_id"]].prompt, r["wrong_code"],
                                               r["feedback"])
            out.append({"example_id": f"refine:{r['task_id']}:{r['sample_index']}:{r['attempt']}",
                        "task_id": r["task_id"], "kind": "refine",
                        "messages": json.dumps(messages),
                        "answer": prompts.assistant_answer(r["code"])})
    return out


def finetune(model: str, examples: list[dict], work: Path, cfg: DemoConfig,
             seed: int, resident=None) -> tuple[str, dict]:
    """SFT (the stage itself: its loop, in ``resident`` or a Ray Train run) of ``model`` on
    ``examples``; (new model, stats). No examples: the model stays as it is (and the stats
    say so)."""
    from selfdebug.train.cli import run as run_sft

    if not examples:
        return model, {"steps": 0, "tokens": 0, "skipped": "no examples"}
    # A round's directory from an earlier run in the same out_dir (another base model,
    # other data) would make Ray Train resume its checkpoints: each run starts its rounds
    # afresh (the demo itself is not resumable).
    shutil.rmtree(work, ignore_errors=True)
    out = work / "model"
    s = cfg.sft
    batch, mbs, packing = s.batch_examples, s.micro_batch_size, True
    if len(examples) < 4 * batch:  # too few to pack into full steps (reduced runs, tests)
        batch = mbs = min(batch, len(examples))
        packing = False
    sft = sft_config(work.name, model, write_examples(examples, work / "data"), work, out,
                     lr=s.lr, warmup=s.warmup_steps, batch=batch, mbs=mbs,
                     max_seq_len=s.max_seq_len, seed=seed, epochs=s.epochs,
                     workers=s.num_workers, cpus=s.cpus_per_worker, packing=packing,
                     attention=s.attention)
    summary = run_sft(sft, resident)
    return str(out), {"steps": summary.get("steps"), "tokens": summary.get("tokens")}


def run_demo(cfg: DemoConfig, log: Callable[[str], None] = print) -> dict:
    """Run every stage; returns the report's data (also written to ``out_dir``)."""
    from selfdebug.demo.report import throughput, write_demo_report
    from selfdebug.metadata import run_metadata
    from selfdebug.ray_utils import init_ray, shutdown_ray
    from selfdebug.resources import demo_holders, require_cpus

    cfg.validate()
    out = Path(cfg.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    timer = Timer(log)
    world = timer("world", generate_world, cfg.world)
    write_jsonl(world["train"] + world["test"], out / "world.jsonl")
    train_recs = world["train"][:cfg.synth.problems]
    test_recs = world["test"][:cfg.eval.problems]
    train, test = problems_of(train_recs), problems_of(test_recs)
    hidden = {r["task_id"] for r in test_recs if r["hidden"]}
    by_id = {p.task_id: p for p in train + test}
    log(f"world: {len(train)} train problems, {len(test)} held-out problems "
        f"({len(hidden)} with a hidden constant)")

    import ray

    own_cluster = not ray.is_initialized()  # a caller's cluster (tests) stays up
    timer("ray start", init_ray, cfg.ray_address or None)
    require_cpus(demo_holders(cfg))  # a joined cluster may be smaller
    # A joined cluster's processes are not this driver's: its CPU would be missed
    timer.cpu_of_ray = timer.cpu.sees("raylet")
    # Every training of the run in one process: a Ray Train run per training starts a
    # controller and a worker that imports torch, DeepSpeed and transformers again.
    resident = ResidentTrainer(cfg.sft.cpus_per_worker) if cfg.sft.num_workers == 1 else None
    engines = sandbox = None
    results: dict = {arm: [] for arm in cfg.arms}
    data_stats: dict = {arm: [] for arm in cfg.arms}
    try:
        base = timer("base model", pretrained_base, cfg.world, cfg.base, cfg.seed, log,
                     cfg.sandbox.workers_per_actor, resident)
        engines = Engines(cfg.engine.for_model(base["path"], seed=cfg.seed), log)
        sandbox = timer("sandbox start", Sandbox, train + test, cfg.sandbox)
        timer("engine start", engines.load, base["path"])
        base_eval, base_init = timer("eval base", evaluate, engines, sandbox, test, None,
                                     cfg.eval, cfg.seed, "base", hidden)
        write_jsonl(base_init, out / "samples" / "base-init.jsonl")
        log(f"base: {_line(base_eval)}")
        fixed = [r for r in base_init if r["status"] != "passed"]
        for arm in cfg.arms:
            results[arm].append({"round": 0, **base_eval})
        attempts = cfg.synth.attempts if "method" in cfg.arms else 0
        shared = timer("synth base", synthesize, engines, sandbox, train, by_id, cfg,
                       cfg.seed, "r0", attempts)
        data = {arm: shared for arm in cfg.arms}
        models = {arm: base["path"] for arm in cfg.arms}
        pools: dict[str, dict] = {arm: {} for arm in cfg.arms}  # example key -> example
        for r in range(1, cfg.rounds + 1):
            for arm in cfg.arms:
                found = examples_of(data[arm], by_id, with_repairs=arm == "method")
                ex, new = round_examples(pools[arm], found, r, cfg.sft.replay, cfg.seed)
                stats = {**_data_stats(data[arm], ex), "new_examples": new,
                         "pool_examples": len(pools[arm])}
                log(f"round {r} {arm}: SFT on {stats['examples']} examples {stats['by_kind']} "
                    f"({new} new, {len(pools[arm])} found so far)")
                models[arm], sft = timer(f"sft r{r} {arm}", finetune, models[arm], ex,
                                         out / arm / f"round-{r}", cfg, cfg.seed + r,
                                         resident)
                data_stats[arm].append({"round": r, **stats, **sft})
            for arm in cfg.arms:
                timer(f"load r{r} {arm}", engines.load, models[arm])
                ev, init = timer(f"eval r{r} {arm}", evaluate, engines, sandbox, test, fixed,
                                 cfg.eval, cfg.seed, f"r{r}:{arm}", hidden)
                write_jsonl(init, out / "samples" / f"r{r}-{arm}-init.jsonl")
                results[arm].append({"round": r, **ev})
                log(f"round {r} {arm}: {_line(ev)}")
                if r < cfg.rounds:
                    data[arm] = timer(f"synth r{r} {arm}", synthesize, engines, sandbox, train,
                                      by_id, cfg, cfg.seed + r, f"r{r}:{arm}",
                                      cfg.synth.attempts if arm == "method" else 0)
        rollout = {"generated_tokens": engines.tokens, "generate_s": round(engines.seconds, 1),
                   "judged": sandbox.judged, "executions": sandbox.executions,
                   "judge_s": round(sandbox.seconds, 1)}
    finally:
        for held in (engines, sandbox, resident):
            if held is not None:
                held.shutdown()
    if own_cluster:
        timer("ray stop", shutdown_ray)
    timer.cpu.stop()
    report = {
        "name": cfg.name, "arms": cfg.arms, "rounds": cfg.rounds, "results": results,
        "data": data_stats, "base_model": base, "stages": timer.stages,
        "wall_s": round(time.time() - t_start, 1),
        "cpu_s": timer.cpu_seconds(),
        **rollout,
        "engine_loads_s": [round(x, 1) for x in engines.load_seconds],
        "isolation": sandbox.isolation,
        "metadata": run_metadata(seed=cfg.seed, config=asdict(cfg)),
    }
    report["throughput"] = throughput(report)
    report["acceptance"] = acceptance(report)
    write_demo_report(out, report)
    log(f"report: {out / 'demo_report.md'}")
    return report


def round_examples(pool: dict, found: list[dict], round_: int, replay: float | None,
                   seed: int) -> tuple[list[dict], int]:
    """(this round's SFT examples, how many are new): the examples ``found`` that no
    earlier round found, plus earlier ones drawn at random, ``replay`` × as many (None:
    all). ``pool`` keeps every distinct example across rounds (same prompt and answer =
    one example; ids name the round that first found it)."""
    new = []
    for e in found:
        key = (e["kind"], e["messages"], e["answer"])
        if key not in pool:
            pool[key] = {**e, "example_id": f"r{round_}:{e['example_id']}"}
            new.append(pool[key])
    old = list(pool.values())[:len(pool) - len(new)]  # the pool keeps first-found order
    if replay is not None and replay * len(new) < len(old):
        old = random.Random(f"{seed}:replay:{round_}").sample(old, round(replay * len(new)))
    return old + new, len(new)


def _data_stats(data: dict, examples: list[dict]) -> dict:
    samples, repairs = data["samples"], data["repairs"]
    kinds: dict[str, int] = {}
    for e in examples:
        kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
    return {"samples": len(samples), "samples_passed": sum(r["status"] == "passed" for r in samples),
            "repairs": len(repairs), "repairs_passed": sum(r["status"] == "passed" for r in repairs),
            "examples": len(examples), "by_kind": kinds}


def _line(ev: dict) -> str:
    return (f"init@1 {ev['init@1']:.3f}, refine@1 {ev['refine@1']:.3f}, repair "
            f"{_f(ev['repair_rate'])}, resample {_f(ev['resample_rate'])}, fixed-set repair "
            f"{_f(ev['fixed_set_repair_rate'])}")


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def acceptance(report: dict) -> dict:
    """The issue's targets, checked on this run's figures."""
    res = report["results"]
    out: dict = {}
    if "method" in res and len(res["method"]) > 1:
        first, last = res["method"][0], res["method"][-1]
        gain = last["refine@1"] - first["refine@1"]
        out["method_refine_gain"] = {"value": round(gain, 4), "target": ">= 0.10",
                                     "ok": gain >= 0.10}
        rs = last["resample_rate"] or 0.0
        rr = last["fixed_set_repair_rate"] or 0.0
        out["repair_vs_resample"] = {"value": round(rr / rs, 2) if rs else None,
                                     "repair": rr, "resample": rs, "target": ">= 3x",
                                     "ok": rr >= 3 * rs}
    if "generation_only" in res and len(res["generation_only"]) > 1:
        g = res["generation_only"][-1]["refine@1"] - res["generation_only"][0]["refine@1"]
        out["control_refine_gain"] = {"value": round(g, 4), "target": "<= 0.03", "ok": g <= 0.03}
    out["wall_time"] = {"value": report["wall_s"], "target": "<= 1200 s",
                        "ok": report["wall_s"] <= 1200}
    return out
