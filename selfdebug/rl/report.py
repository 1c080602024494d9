"""End-of-run outputs of `selfdebug rl`: reward / KL / pass-rate curves (PNG) and a
Markdown + JSON report beside the metrics."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from selfdebug.metadata import run_metadata, write_report
from selfdebug.train.metrics import read_metrics

REPORT_NAME = "rl_report"
CURVES = (("reward_mean", "mean reward R(r) + R(e)"), ("pass_rate", "rollout pass rate"),
          ("kl", "KL to the reference (per answer)"), ("s_cb_mean", "mean S_cb (CodeBLEU)"))
TIME_KEYS = ("generation_s", "rewards_s", "learning_s", "weight_sync_s")


def plot_curves(records: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    for ax, (key, title) in zip(axes, CURVES):
        pts = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), "-", marker=".")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def summarize(records: list[dict]) -> dict:
    """First vs last quarter of the run, and the time split."""
    q = max(1, len(records) // 4)
    first, last = records[:q], records[-q:]
    out = {"steps_logged": len(records)}
    for key in ("reward_mean", "pass_rate", "kl", "s_ut_mean", "s_cb_mean", "s_ex_mean"):
        out[f"{key}_first_quarter"] = _mean(r.get(key) for r in first)
        out[f"{key}_last_quarter"] = _mean(r.get(key) for r in last)
    body = records[1:] or records  # step 1 carries start-up costs
    times = {k: _mean(r.get(k) for r in body) for k in TIME_KEYS}
    total = sum(v for v in times.values() if v)
    out["time_per_step_s"] = times
    out["time_share"] = {k: (v / total if v and total else None) for k, v in times.items()}
    out["reward_failures"] = records[-1].get("reward_rows_failed") if records else None
    return out


def write_rl_report(log_dir: Path, cfg, summary: dict) -> dict:
    records = [r for r in read_metrics(log_dir) if r.get("split") == "train"]
    plot_curves(records, log_dir / "rl_curves.png")
    config = asdict(cfg)
    data = {"summary": {**summary, **summarize(records)}, "metadata":
            run_metadata(seed=cfg.seed, config=config)}
    s = data["summary"]

    def fmt(x):
        return f"{x:.3f}" if isinstance(x, float) else str(x)

    shares = ", ".join(f"{k.removesuffix('_s')} {fmt(v)}" for k, v in s["time_share"].items())
    md = [f"# RL report: {cfg.name}", "",
          f"- policy: `{cfg.model}` → `{s.get('output_dir')}`; estimator `{cfg.estimator}`, "
          f"reward `{cfg.reward.kind}`, {'overlapped (one-step off-policy)' if cfg.overlap else 'synchronous'}",
          f"- steps: {s.get('steps')} × {cfg.items_per_step} items × n={cfg.sampling.n} "
          f"on {s.get('world_size')} learner worker(s)",
          f"- mean reward: {fmt(s['reward_mean_first_quarter'])} (first quarter) → "
          f"{fmt(s['reward_mean_last_quarter'])} (last quarter)",
          f"- pass rate: {fmt(s['pass_rate_first_quarter'])} → {fmt(s['pass_rate_last_quarter'])}",
          f"- KL: {fmt(s['kl_first_quarter'])} → {fmt(s['kl_last_quarter'])}",
          f"- time share per step: {shares}",
          f"- rewards scored as failures (timeouts, errors): {s.get('reward_failures')}",
          f"- git revision: `{data['metadata']['git_revision']}`, seed {cfg.seed}",
          "", "![curves](rl_curves.png)"]
    write_report(log_dir, REPORT_NAME, data, "\n".join(md))
    return data
