"""The RL step loop, run by every learner worker (a Ray Train worker, or the driver itself).

Per step: rollouts (generated and scored by worker 0, sent to every worker) → update →
weights into the engines in place (`EnginePool.reload_weights`) → metrics → checkpoint.
With ``overlap`` the next step's rollouts are generated (by the policy one update behind)
while the learner trains; the ratio is then taken against their behaviour log-probs.

Resume: the latest checkpoint (DeepSpeed state, step, KL coefficient) is restored, the
engines get its weights, and the loop continues at the next step: same step numbers,
same items and sampling seeds per step, no step done twice.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch.distributed as dist

from selfdebug.rl import learner as L
from selfdebug.rl.advantages import KLController
from selfdebug.rl.config import RLConfig
from selfdebug.rl.policy import lm_of, lm_state
from selfdebug.train import checkpoint as ckpt
from selfdebug.train.checkpoint import TrainState
from selfdebug.train.engine import distributed_sum, in_ray_train

RL_STATE = "rl_state.json"


class InjectedFailure(RuntimeError):
    """Raised by ``fail_after_step`` to test resumption."""


def _broadcast(obj, rank: int):
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _batch(rollouts, pad_id: int) -> dict:
    """What the learners need of the rollouts, as plain lists."""
    return {
        "group": [r.group for r in rollouts],
        "prompt_ids": [r.prompt_ids or [pad_id] for r in rollouts],
        "response_ids": [r.response_ids for r in rollouts],
        "behaviour_logprobs": [r.behaviour_logprobs for r in rollouts],
        "r_refine": [r.reward.r_refine for r in rollouts],
        "r_explain": [r.reward.r_explain for r in rollouts],
        "explain_end": [r.explain_end for r in rollouts],
    }


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def rollout_metrics(rollouts, items_by_id) -> dict:
    rw = [r.reward for r in rollouts]
    return {
        "reward_mean": _mean(x.r_refine + x.r_explain for x in rw),
        "reward_refine_mean": _mean(x.r_refine for x in rw),
        "reward_explain_mean": _mean(x.r_explain for x in rw if x.s_ex is not None),
        "s_ut_mean": _mean(x.s_ut for x in rw),
        "s_cb_mean": _mean(x.s_cb for x in rw),
        "s_ex_mean": _mean(x.s_ex for x in rw),
        "pass_rate": _mean(float(x.passed) for x in rw),
        "reward_failures": sum(bool(x.failures) for x in rw),
        "generation_errors": sum(bool(r.error) for r in rollouts),
        "response_tokens_mean": _mean(len(r.response_ids) for r in rollouts),
        "rc_fallback_share": _mean(float(items_by_id[r.item_id].rc_fallback) for r in rollouts),
        "explain_refine_share": _mean(float(r.mode == "explain_refine") for r in rollouts),
    }


def learner_loop(config: dict) -> dict:
    """Train per ``config`` = {"cfg": RLConfig, "pool": EnginePool, "model_path": str}."""
    from transformers import AutoTokenizer

    cfg: RLConfig = config["cfg"]
    pool, model_path = config["pool"], config["model_path"]
    in_ray = in_ray_train()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lr = L.build(cfg, model_path, pad_id)
    rank = lr.rank
    run_dir = Path(cfg.run_dir)
    state, kl = TrainState(), KLController(cfg.kl_controller, cfg.kl_coef, cfg.kl_target,
                                           cfg.kl_horizon)
    with ckpt.restored_dir(in_ray, run_dir) as d:
        if d is not None:
            state = ckpt.load(lr.engine, d, rank)
            kl.value = json.loads((d / RL_STATE).read_text())["kl_coef"]
    resumed_at = state.step

    services, log, items_by_id = None, None, {}
    if rank == 0:
        from selfdebug.rl.data import load_items
        from selfdebug.rl.services import Services
        from selfdebug.train.metrics import MetricsLog

        items, problems = load_items(cfg)
        items_by_id = {it.item_id: it for it in items}
        services = Services(cfg, pool, tokenizer, items, problems)
        services.wait_ready()
        log = MetricsLog(cfg.resolved_log_dir(), resume_step=resumed_at)
        print(f"[rl] {cfg.estimator}: {len(items)} items, {lr.world} learner worker(s), "
              f"{cfg.steps} steps, " + (f"resuming after step {resumed_at}" if resumed_at
                                        else "fresh start"), flush=True)
    sync_s = _sync_weights(lr, cfg, pool)  # the engines start from the learner's weights
    pending = services.collect(state.step) if services and state.step < cfg.steps else None
    summary: dict = {}
    try:
        while state.step < cfg.steps:
            t_step = time.perf_counter()
            step = state.step  # 0-based index of the rollouts; logged as step + 1
            batch, timing, rollouts = None, {}, None
            if rank == 0:
                t0 = time.perf_counter()
                rollouts, timing = _result(pending, step, cfg)
                timing["wait_rollouts_s"] = time.perf_counter() - t0
                pending = None
                if cfg.overlap and step + 1 < cfg.steps:
                    pending = services.collect(step + 1)  # generated while we train
                batch = _batch(rollouts, pad_id)
            batch = _broadcast(batch, rank)
            t0 = time.perf_counter()
            acc = L.update(lr, L.shard(batch, rank, lr.world), cfg, kl.value, step)
            learn_s = time.perf_counter() - t0
            keys = sorted(acc)
            totals = dict(zip(keys, distributed_sum(*(acc[k] for k in keys))))
            t0 = time.perf_counter()
            if pending is not None:  # engines reload between generation phases
                _result(pending, step + 1, cfg)
            wait_next_s = time.perf_counter() - t0
            sync_s = _sync_weights(lr, cfg, pool)
            if rank == 0 and not cfg.overlap and step + 1 < cfg.steps:
                pending = services.collect(step + 1)
            seq_kl = totals["kl_sum"] / max(totals["sequences"], 1)
            kl_used = kl.value
            kl.update(seq_kl, cfg.rollouts_per_step)
            state.step += 1
            state.tokens += sum(map(len, batch["response_ids"]))
            if rank == 0:
                mb = max(totals["micro_batches"], 1)
                m = {**rollout_metrics(rollouts, items_by_id),
                     "kl": seq_kl, "kl_coef": kl_used,
                     "policy_loss": totals["policy_loss"] / mb,
                     "value_loss": totals["value_loss"] / mb if cfg.estimator == "ppo" else None,
                     "entropy": totals["entropy"] / mb, "clip_frac": totals["clip_frac"] / mb,
                     "approx_kl_old": totals["approx_kl_old"] / mb,
                     # ≈ 1: the first ratio (no update yet) and ≈ 0: the mean |log-prob
                     # gap| between engine and learner (weights synced, same distribution)
                     "ratio_first": totals["ratio_first"] / lr.world,
                     "behaviour_logprob_gap": totals["behaviour_gap_sum"]
                     / max(totals["tokens"], 1.0),
                     "explained_variance": (totals["ev_num"] / totals["ev_den"]
                                            if totals.get("ev_den") else None),
                     "generation_s": timing["generation_s"],
                     "rewards_s": timing["rewards_wait_s"],
                     "wait_rollouts_s": timing["wait_rollouts_s"],
                     "learning_s": learn_s, "weight_sync_s": sync_s,
                     "wait_next_rollouts_s": wait_next_s,
                     "generated_tokens": timing["generated_tokens"],
                     "step_s": time.perf_counter() - t_step,
                     **{f"reward_{k}": v for k, v in services.scorer.stats.items()}}
                log.log(state.step, "train", {k: v for k, v in m.items() if v is not None})
                print(f"[rl] step {state.step}/{cfg.steps} reward {m['reward_mean']:.3f} "
                      f"pass {m['pass_rate']:.2f} kl {seq_kl:.4f} ratio0 {m['ratio_first']:.3f} "
                      f"lp-gap {m['behaviour_logprob_gap']:.4f} ({m['step_s']:.1f} s)",
                      flush=True)
            last = state.step >= cfg.steps
            if last or state.step % cfg.checkpoint_every == 0:
                state.finished = last
                extra = _final_outputs(lr, cfg, state, kl, model_path, tokenizer, log) \
                    if last else _state_writer(kl, rank)
                ckpt.commit(lr.engine, state, {"step": state.step}, rank, in_ray, run_dir,
                            cfg.keep_checkpoints, extra)
            if cfg.fail_after_step == state.step and resumed_at == 0:
                ckpt.wait_until_registered(in_ray)
                raise InjectedFailure(f"fail_after_step={state.step} (testing resumption)")
        summary = {"step": state.step, "resumed_at": resumed_at}
    finally:
        if pending is not None:
            pending.cancel()
        if services is not None:
            summary["reward_stats"] = dict(services.scorer.stats)
            services.shutdown()
        if log is not None:
            log.close()
    return summary


def _result(pending, step: int, cfg: RLConfig):
    """The rollouts of ``step`` (generation is bounded by the engines' own limits; this
    wait is the backstop, naming what it waited for)."""
    from concurrent.futures import TimeoutError as FutureTimeout

    limit = cfg.reward.timeout_s + cfg.rollout_timeout_s
    try:
        return pending.result(timeout=limit)
    except FutureTimeout:
        raise TimeoutError(f"rollouts of step {step + 1} (generation on the engine pool + "
                           f"rewards) not ready within {limit:.0f} s") from None


def _sync_weights(lr, cfg: RLConfig, pool) -> float:
    """The policy's weights into every engine, in place; seconds taken (a collective)."""
    from selfdebug.train.export import full_state_dict

    t0 = time.perf_counter()
    state = full_state_dict(lr.engine, cfg.zero_stage, lr.rank)
    if lr.rank == 0:
        pool.reload_weights(lm_state(state))
    if dist.is_initialized():
        dist.barrier()
    return time.perf_counter() - t0


def _state_writer(kl: KLController, rank: int):
    if rank != 0:
        return None

    def extra(d: Path) -> None:
        (d / RL_STATE).write_text(json.dumps({"kl_coef": kl.value}) + "\n")
    return extra


def _final_outputs(lr, cfg, state, kl, model_path, tokenizer, log):
    """Gather the weights (collective); rank 0 adds the exported policy and the report."""
    import shutil

    from selfdebug.rl.report import write_rl_report
    from selfdebug.train.export import full_state_dict, save_pretrained

    weights = full_state_dict(lr.engine, cfg.zero_stage, lr.rank)
    if lr.rank != 0:
        return None
    write_state = _state_writer(kl, 0)

    def extra(d: Path) -> None:
        write_state(d)
        out = save_pretrained(lm_of(lr.engine.module), lm_state(weights), model_path,
                              tokenizer, d / "model", False)
        log.tb.flush()
        log_dir = cfg.resolved_log_dir()
        write_rl_report(log_dir, cfg, {"steps": state.step, "world_size": lr.world,
                                       "output_dir": str(cfg.resolved_output_dir())})
        shutil.copytree(log_dir, d / "logs", dirs_exist_ok=True)
        if not in_ray_train():  # under Ray the driver copies the model out of storage
            shutil.copytree(out, cfg.resolved_output_dir(), dirs_exist_ok=True)
    return extra

