"""PPO's losses and the diagnostics logged with them (token-level means over ``mask``)."""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, clip_eps: float) -> tuple[torch.Tensor, dict]:
    """Clipped surrogate −min(ρA, clip(ρ, 1±ε)A), ρ = π/π_old. ``old_logprobs`` are the
    behaviour policy's: with one-step off-policy rollouts ρ is the importance ratio
    against the policy that generated them."""
    log_ratio = (logprobs - old_logprobs).clamp(-20.0, 20.0)
    ratio = log_ratio.exp()
    surr1 = ratio * advantages
    surr2 = ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages
    loss = masked_mean(-torch.min(surr1, surr2), mask)
    with torch.no_grad():
        stats = {"clip_frac": masked_mean((surr2 < surr1).float(), mask).item(),
                 "approx_kl_old": masked_mean(-log_ratio, mask).item(),
                 "ratio_mean": masked_mean(ratio, mask).item()}
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               mask: torch.Tensor, clip_eps: float | None) -> torch.Tensor:
    """½·max((V − R)², (V_clipped − R)²), V_clipped within ±ε of the rollout's values."""
    loss = (values - returns) ** 2
    if clip_eps is not None and clip_eps > 0:
        clipped = old_values + (values - old_values).clamp(-clip_eps, clip_eps)
        loss = torch.max(loss, (clipped - returns) ** 2)
    return 0.5 * masked_mean(loss, mask)


def entropy(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the policy's next-token distributions over the answer tokens."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return masked_mean(-(logp.exp() * logp).sum(-1), mask)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var(R − V) / Var(R) over the answer tokens (1: perfect, ≤ 0: no better than a mean)."""
    r = returns[mask.bool()].float()
    v = values[mask.bool()].float()
    if r.numel() < 2:
        return float("nan")
    var = r.var(unbiased=False)
    if var.item() == 0:
        return float("nan")
    return float(1 - (r - v).var(unbiased=False) / var)
