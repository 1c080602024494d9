"""End-of-run outputs: the loss-curve PNG and a short Markdown + JSON report."""

from __future__ import annotations

from pathlib import Path

from selfdebug.metadata import run_metadata, write_report
from selfdebug.train.metrics import read_attempts, read_metrics

REPORT_NAME = "sft_report"


def plot_loss(records: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for split, style in (("train", "-"), ("val", "o-")):
        pts = [(r["step"], r["loss"]) for r in records if r.get("split") == split]
        if pts:
            ax.plot(*zip(*pts), style, label=f"{split} loss", markersize=4)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean per answer token)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def write_sft_report(log_dir: Path, config: dict, summary: dict) -> dict:
    """Write ``loss_curve.png`` and ``sft_report.{md,json}`` into ``log_dir``; returns the data."""
    records = read_metrics(log_dir)
    train = [r for r in records if r.get("split") == "train"]
    val = [r for r in records if r.get("split") == "val"]
    plot_loss(records, log_dir / "loss_curve.png")
    tps = [r["tokens_per_s"] for r in train[1:] if "tokens_per_s" in r]  # skip warm-up step
    attempts = read_attempts(log_dir)
    data = {
        "summary": {
            **summary,
            "first_train_loss": train[0]["loss"] if train else None,
            "last_train_loss": train[-1]["loss"] if train else None,
            "first_val_loss": val[0]["loss"] if val else None,
            "last_val_loss": val[-1]["loss"] if val else None,
            "mean_tokens_per_s": sum(tps) / len(tps) if tps else None,
            # each start after the first: a Ray Train restart or a re-run of the command
            "restarts": max(len(attempts) - 1, 0),
            "resumed_at_steps": [a["resumed_at"] for a in attempts[1:]],
        },
        "val_loss": [{"step": r["step"], "loss": r["loss"]} for r in val],
        "metadata": run_metadata(seed=config.get("seed"), config=config),
    }
    s = data["summary"]
    sched = s.get("schedule") or {}

    def fmt(x):
        return f"{x:.4f}" if isinstance(x, float) else str(x)

    md = [f"# SFT report: {config.get('name')}", "",
          f"- model: `{config.get('model')}` → `{s.get('out_dir')}`",
          f"- data: `{s.get('data_dirs')}` ({s.get('train_rows')} train rows, "
          f"{s.get('val_rows')} validation rows per worker)",
          f"- schedule: {sched.get('examples')} examples ({sched.get('tokens')} tokens) per "
          f"epoch; {s.get('steps')} optimizer steps of ≈{sched.get('examples_per_step')} "
          f"examples / ≈{sched.get('tokens_per_step')} tokens (batch "
          f"{config.get('global_batch_size')} examples = {sched.get('rows_per_step')} rows); "
          f"warm-up {sched.get('warmup_steps')} steps "
          f"({100 * (sched.get('warmup_fraction') or 0):.1f}% of the run)",
          f"- trained on {s.get('tokens')} tokens in all, on {s.get('world_size')} worker(s), "
          f"ZeRO-{config.get('zero_stage')}, {s.get('precision')}, "
          f"LoRA r={config.get('lora_r')}",
          f"- train loss: {fmt(s['first_train_loss'])} → {fmt(s['last_train_loss'])}",
          f"- validation loss: {fmt(s['first_val_loss'])} → {fmt(s['last_val_loss'])}",
          f"- tokens/s (real tokens, all workers): {fmt(s['mean_tokens_per_s'])}",
          f"- restarts: {s['restarts']} (resumed at steps {s['resumed_at_steps']}: a "
          "restart redoes only the steps after its checkpoint)",
          f"- git revision: `{data['metadata']['git_revision']}`, seed {config.get('seed')}",
          "", "![loss curve](loss_curve.png)"]
    write_report(log_dir, REPORT_NAME, data, "\n".join(md))
    return data
