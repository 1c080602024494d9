"""Advantage estimators and the KL penalty (LeDex §2.3; OpenRLHF's ppo_utils for shapes).

Tensors are ``[batch, T]`` over the generated tokens, with ``mask`` 1 on real tokens and 0
on padding after a sequence's end (answers are right-padded).

- ``ppo``: token rewards (R(e) on the last explanation token, R(r) on the last token, −β·KL
  on every token) and the value head's values → GAE (γ, λ); returns = advantages + values.
- ``grpo``: the sequence's task reward R = R(r) + R(e) normalised within each item's
  group of ``n`` answers, (R − mean) / (std + ε), minus β·KL of the sequence (outside the
  normalisation: see `learner.advantages_for`), broadcast to every token.
- ``rloo``: R minus the mean of the group's *other* answers (leave-one-out baseline), − β·KL.
"""

from __future__ import annotations

import math

import torch


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                 mask: torch.Tensor) -> torch.Tensor:
    """k1 estimate log π(a) − log π_ref(a) of the sampled tokens (zero on padding)."""
    return (logprobs.float() - ref_logprobs.float()) * mask


def token_rewards(mask: torch.Tensor, kl: torch.Tensor, kl_coef: float,
                  r_refine: torch.Tensor, r_explain: torch.Tensor,
                  explain_end: torch.Tensor) -> torch.Tensor:
    """Per-token rewards: −β·KL everywhere, R(e) at ``explain_end`` (−1 = no explanation),
    R(r) on each sequence's last real token."""
    rewards = -kl_coef * kl * mask
    last = mask.sum(dim=1).long() - 1
    rows = torch.arange(mask.size(0))
    has_expl = explain_end >= 0
    if has_expl.any():
        idx = explain_end.clamp(min=0)
        rewards[rows[has_expl], idx[has_expl]] += r_explain[has_expl].to(rewards.dtype)
    valid = last >= 0
    rewards[rows[valid], last[valid]] += r_refine[valid].to(rewards.dtype)
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation → (advantages, returns). The value after a
    sequence's last token is 0 (the episode ends there)."""
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(rewards.size(0), dtype=rewards.dtype)
    for t in reversed(range(rewards.size(1))):
        next_value = values[:, t + 1] if t + 1 < rewards.size(1) else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        last = last * mask[:, t]  # padding contributes nothing and resets nothing after it
        advantages[:, t] = last
    returns = advantages + values
    return advantages * mask, returns * mask


def _groups(x: torch.Tensor, n: int) -> torch.Tensor:
    if x.numel() % n:
        raise ValueError(f"{x.numel()} sequence rewards do not split into groups of {n}")
    return x.view(-1, n)


def grpo_advantages(seq_rewards: torch.Tensor, n: int, eps: float = 1e-6) -> torch.Tensor:
    """Group-normalised sequence advantages (answers of one item are consecutive)."""
    g = _groups(seq_rewards.float(), n)
    std = g.std(dim=1, keepdim=True, unbiased=False) if n > 1 else torch.ones_like(g)
    return ((g - g.mean(dim=1, keepdim=True)) / (std + eps)).view(-1)


def rloo_advantages(seq_rewards: torch.Tensor, n: int) -> torch.Tensor:
    """Leave-one-out baseline: R_i − mean_{j≠i} R_j."""
    if n < 2:
        raise ValueError("rloo needs at least 2 answers per item")
    g = _groups(seq_rewards.float(), n)
    baseline = (g.sum(dim=1, keepdim=True) - g) / (n - 1)
    return (g - baseline).view(-1)


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    n = mask.sum().clamp(min=1)
    mean = (x * mask).sum() / n
    var = (((x - mean) * mask) ** 2).sum() / n
    return (x - mean) * torch.rsqrt(var + eps) * mask


class KLController:
    """β: fixed, or adaptive (Ziegler et al. 2019): β ← β·(1 + clip(KL/target − 1, ±0.2)·n/horizon)."""

    def __init__(self, kind: str, init: float, target: float = 6.0, horizon: int = 10000):
        self.kind, self.value, self.target, self.horizon = kind, float(init), target, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        if self.kind != "adaptive" or not math.isfinite(current_kl):
            return
        error = min(max(current_kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_steps / self.horizon
