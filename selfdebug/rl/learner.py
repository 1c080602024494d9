"""The learner: the policy (with a value head for PPO) and the frozen reference on the shared
training engine (`selfdebug.train.engine`: DeepSpeed), and one update from a step's
rollouts: log-probs, KL, token rewards, advantages, then mini-batch epochs of the clipped
surrogate (+ value loss), with gradient accumulation and clipping by DeepSpeed.

Every worker holds whole groups (an item's n answers): group estimators stay local, and
PPO's advantage whitening uses statistics over all workers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from selfdebug.rl import advantages as adv
from selfdebug.rl import losses
from selfdebug.rl.config import RLConfig
from selfdebug.rl.policy import ValueHeadPolicy, collate, forward, pad_rows
from selfdebug.train import engine as te


@dataclass
class Learner:
    engine: object  # DeepSpeed engine around the policy (ValueHeadPolicy for PPO)
    ref: object  # DeepSpeed engine around the frozen reference
    rank: int
    world: int
    device: torch.device
    pad_id: int


def build(cfg: RLConfig, model_path: str, pad_id: int) -> Learner:
    """Join the process group and build the policy and reference engines."""
    rank, world, device = te.setup_distributed(cpus_per_worker=cfg.cpus_per_worker)
    dtype = te.resolve_precision(cfg.precision, device)
    bf16 = dtype == torch.bfloat16
    ds_cfg = te.ds_config(micro_batch_size=cfg.micro_batch_size,
                          grad_accum=cfg.gradient_accumulation(world), world=world,
                          zero_stage=cfg.zero_stage, bf16=bf16, max_grad_norm=cfg.max_grad_norm)
    keep = te.zero3_init(ds_cfg)
    torch.manual_seed(cfg.seed)
    lm = te.build_model(model_path, dtype=dtype,
                        gradient_checkpointing=cfg.gradient_checkpointing)
    module = ValueHeadPolicy(lm, cfg.value_lr / cfg.lr) if cfg.estimator == "ppo" else lm
    updates = cfg.steps * cfg.ppo_epochs * (cfg.rollouts_per_step // cfg.mini_batch_size)
    engine, _, _ = te.initialize(module, ds_cfg, te.OptimSpec(
        lr=cfg.lr, total_steps=max(1, updates), min_lr_ratio=1.0,
        weight_decay=cfg.weight_decay))
    # The reference: the same weights, frozen (partitioned too under ZeRO-3).
    ref_cfg = te.ds_config(micro_batch_size=cfg.micro_batch_size,
                           grad_accum=cfg.gradient_accumulation(world), world=world,
                           zero_stage=3 if cfg.zero_stage == 3 else 0, bf16=bf16)
    ref, _, _ = te.initialize(te.build_model(model_path, dtype=dtype), ref_cfg, None)
    del keep
    return Learner(engine, ref, rank, world, device, pad_id)


def shard(batch: dict, rank: int, world: int) -> dict:
    """This worker's whole groups (``batch`` lists are per rollout, ``group`` gives the item)."""
    keep = [i for i, g in enumerate(batch["group"]) if g % world == rank]
    return {k: [v[i] for i in keep] for k, v in batch.items()}


def _micro(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(n, i + size))) for i in range(0, n, size)]


@torch.no_grad()
def _score_tokens(lr: Learner, b: dict, cfg: RLConfig) -> dict:
    """Policy and reference log-probs and values of the rollouts, micro-batch by micro-batch."""
    lr.engine.eval()
    n = len(b["response_ids"])
    T = max(1, max(map(len, b["response_ids"])))
    logp, ref_lp, values = torch.zeros(n, T), torch.zeros(n, T), torch.zeros(n, T)
    for idx in _micro(n, cfg.micro_batch_size):
        t = collate([b["prompt_ids"][i] for i in idx], [b["response_ids"][i] for i in idx],
                    lr.pad_id, lr.device)
        lp, v, _ = forward(lr.engine, t)
        rlp, _, _ = forward(lr.ref, t)
        w = lp.size(1)
        logp[idx, :w], ref_lp[idx, :w] = lp.cpu(), rlp.cpu()
        if v is not None:
            values[idx, :w] = v.cpu()
    lr.engine.train()
    return {"logprobs": logp, "ref_logprobs": ref_lp, "values": values}


def advantages_for(b: dict, s: dict, cfg: RLConfig, kl_coef: float, world_stats) -> dict:
    """KL, token rewards, advantages and returns for this worker's rollouts."""
    T = s["logprobs"].size(1)
    mask = pad_rows([[1.0] * len(r) for r in b["response_ids"]], T)
    kl = adv.kl_per_token(s["logprobs"], s["ref_logprobs"], mask)
    r_ref = torch.tensor(b["r_refine"], dtype=torch.float32)
    r_exp = torch.tensor(b["r_explain"], dtype=torch.float32)
    end = torch.tensor(b["explain_end"], dtype=torch.long)
    out = {"mask": mask, "kl": kl}
    if cfg.estimator == "ppo":
        rewards = adv.token_rewards(mask, kl, kl_coef, r_ref, r_exp, end)
        a, ret = adv.gae(rewards, s["values"], mask, cfg.gamma, cfg.lam)
        if cfg.normalize_advantages:
            n, total, sq = world_stats(mask.sum().item(), (a * mask).sum().item(),
                                       (a * a * mask).sum().item())
            mean = total / max(n, 1.0)
            std = max(sq / max(n, 1.0) - mean * mean, 0.0) ** 0.5
            a = (a - mean) / (std + 1e-8) * mask
        out.update(advantages=a, returns=ret)
    else:
        # The KL penalty is applied after the group baseline, not inside it: in a group whose
        # task rewards are all equal (no answer right yet), GRPO's division by the group's
        # std would otherwise blow the tiny β·KL differences up into unit-size advantages,
        # i.e. pure noise.
        n = cfg.sampling.n
        task = r_ref + r_exp
        seq_adv = (adv.grpo_advantages(task, n) if cfg.estimator == "grpo"
                   else adv.rloo_advantages(task, n)) - kl_coef * kl.sum(dim=1)
        out.update(advantages=seq_adv.unsqueeze(1) * mask, returns=torch.zeros_like(mask))
    return out


def update(lr: Learner, b: dict, cfg: RLConfig, kl_coef: float, step: int) -> dict:
    """One RL step's learning on this worker's rollouts ``b``; returns summed statistics
    (sums and counts, reduced over workers by the caller)."""
    s = _score_tokens(lr, b, cfg)
    old = s["logprobs"]
    if cfg.overlap:
        # One-step off-policy: the ratio is taken against the policy that generated the
        # answers (vLLM's log-probs), not the learner's current one.
        old = pad_rows(b["behaviour_logprobs"], old.size(1))
    a = advantages_for(b, s, cfg, kl_coef, te.distributed_sum)
    n = len(b["response_ids"])
    # Alignment check: the engines generated these answers with the weights the learner
    # has now (synchronous loop), so their log-probs must match the learner's.
    behaviour = pad_rows(b["behaviour_logprobs"], s["logprobs"].size(1))
    gap = ((behaviour - s["logprobs"]).abs() * a["mask"]).sum().item()
    mb = cfg.mini_batch_size // lr.world
    acc = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "clip_frac": 0.0,
           "approx_kl_old": 0.0, "micro_batches": 0.0, "ratio_first": 0.0,
           "behaviour_gap_sum": gap, "tokens": float(a["mask"].sum())}
    rng = random.Random(hash((cfg.seed, step, lr.rank)) & 0xFFFFFFFF)
    for _ in range(cfg.ppo_epochs):
        order = list(range(n))
        rng.shuffle(order)
        for m0 in range(0, n, mb):  # one optimizer step per mini-batch
            mini = order[m0:m0 + mb]
            for i0 in range(0, len(mini), cfg.micro_batch_size):  # accumulated micro-batches
                idx = mini[i0:i0 + cfg.micro_batch_size]
                t = collate([b["prompt_ids"][i] for i in idx],
                            [b["response_ids"][i] for i in idx], lr.pad_id, lr.device)
                w = t["mask"].size(1)

                def cut(x, idx=idx, w=w):
                    return x[idx, :w].to(lr.device)

                lp, v, ent = forward(lr.engine, t, with_entropy=True)
                pl, st = losses.policy_loss(lp, cut(old), cut(a["advantages"]), t["mask"],
                                            cfg.clip_eps)
                loss = pl
                if cfg.estimator == "ppo":
                    vl = losses.value_loss(v, cut(s["values"]), cut(a["returns"]), t["mask"],
                                           cfg.value_clip_eps)
                    loss = loss + cfg.value_coef * vl
                    acc["value_loss"] += vl.item()
                if cfg.entropy_coef:
                    loss = loss - cfg.entropy_coef * ent
                lr.engine.backward(loss)
                lr.engine.step()
                acc["policy_loss"] += pl.item()
                acc["entropy"] += ent.item()
                acc["clip_frac"] += st["clip_frac"]
                acc["approx_kl_old"] += st["approx_kl_old"]
                if not acc["micro_batches"]:  # before any optimizer step: ≈ 1 unless misaligned
                    acc["ratio_first"] = st["ratio_mean"]
                acc["micro_batches"] += 1
    mask = a["mask"]
    acc["kl_sum"] = float(a["kl"].sum())  # summed over tokens: per-sequence KL when / n
    acc["sequences"] = float(n)
    if cfg.estimator == "ppo":
        acc["ev_num"], acc["ev_den"] = _ev_parts(s["values"], a["returns"], mask)
    return acc


def _ev_parts(values, returns, mask) -> tuple[float, float]:
    """(this worker's explained variance × its answer tokens, its answer tokens): summed
    over workers, their ratio is the token-weighted mean (exact with one worker)."""
    ev = losses.explained_variance(values, returns, mask)
    n = float(mask.sum())
    return (ev * n if ev == ev else 0.0), n
