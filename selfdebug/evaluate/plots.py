"""PNG plots: pass@k per round per model, and the refinement rate per round per model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from selfdebug.evaluate.report import LABELS

STYLES = {"refine": "-o", "explain_refine": "--s"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt

    return plt


def _series(results, model, bench, mode, key, scale=1.0):
    """(rounds, values) of a chain, starting from Init at round 0."""
    pts = []
    for r in results:
        if r["model"] != model or r["benchmark"] != bench:
            continue
        if r["mode"] == "init" or r["mode"] == mode:
            value = r.get(key)
            if value is not None:
                pts.append((r["round"], scale * value))
    return sorted(pts)


def _grid(plt, nrows, ncols):
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.2 * nrows), squeeze=False)
    for row in axes:
        for ax in row:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole
            ax.set_ylim(-3, 103)
    return fig, axes


def plot_passk(results: list[dict], models: Sequence[str], benchmarks: Sequence[str],
               modes: Sequence[str], ks: Sequence[int], out: Path) -> Path:
    """One panel per (k, benchmark): x = round (0 = Init), a line per model × mode."""
    plt = _plt()
    fig, axes = _grid(plt, len(ks), len(benchmarks))
    for i, k in enumerate(ks):
        for j, bench in enumerate(benchmarks):
            _panel(axes[i][j], results, models, modes, bench, f"pass@{k}",
                   f"{bench} pass@{k}", "round (0 = Init)")
    return _legend_and_save(plt, fig, axes, out, bottom=0.08)


def plot_refine_rate(results: list[dict], models: Sequence[str], benchmarks: Sequence[str],
                     modes: Sequence[str], out: Path) -> Path:
    """One panel per benchmark: cumulative success refinement rate (%) per round."""
    plt = _plt()
    fig, axes = _grid(plt, 1, len(benchmarks))
    for j, bench in enumerate(benchmarks):
        _panel(axes[0][j], results, models, modes, bench, "refine_rate",
               f"{bench}: wrong samples fixed", "round", scale=100.0, first_round=1)
    return _legend_and_save(plt, fig, axes, out, bottom=0.15)


def _panel(ax, results, models, modes, bench, key, title, xlabel, scale=1.0, first_round=0):
    """One line per (model, mode) of ``key`` (in %) over rounds."""
    for c, model in enumerate(models):
        for mode in modes:
            pts = [p for p in _series(results, model, bench, mode, key, scale)
                   if p[0] >= first_round]
            if pts:
                ax.plot(*zip(*pts), STYLES.get(mode, "-"), color=f"C{c}",
                        label=f"{model} {LABELS[mode]}", markersize=4)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("%")
    ax.grid(alpha=0.3)


def _legend_and_save(plt, fig, axes, out: Path, bottom: float) -> Path:
    """One shared legend under the panels, then write the PNG."""
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def write_plots(out_dir: Path, data: dict) -> list[Path]:
    args = (data["results"], data["models"], data["benchmarks"], data["modes"])
    return [plot_passk(*args, data["ks"], Path(out_dir) / "passk_rounds.png"),
            plot_refine_rate(*args, Path(out_dir) / "refine_rate.png")]
