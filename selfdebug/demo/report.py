"""The demo's report: demo_report.json / .md and demo_rounds.png."""

from __future__ import annotations

from pathlib import Path

from selfdebug.metadata import write_report

ROWS = [("init@1", "init@1"), ("refine@1", "refine@1"), ("expl+refine@1", "expl+refine@1"),
        ("repair_rate", "repair rate (own wrong samples)"),
        ("fixed_set_repair_rate", "repair rate, fixed set of base-model wrong programs"),
        ("resample_rate", "resample rate (a fresh sample per wrong one)")]


def throughput(report: dict) -> dict:
    """Work per wall second for each kind of stage: pretraining and SFT tokens (start-ups
    included), generated tokens, judged and executed (distinct) programs over synthesis +
    evaluation. The amounts follow the code's work; the rates also follow the machine's
    speed."""
    walls = {s["stage"]: s["wall_s"] for s in report["stages"]}

    def wall(prefix: str) -> float:
        return sum(w for stage, w in walls.items() if stage.startswith(prefix))

    def rate(amount: float, seconds: float, unit: str) -> dict:
        return {unit: amount, "wall_s": round(seconds, 1),
                "per_s": round(amount / seconds, 1) if seconds > 0 else None}

    out = {}
    base = report["base_model"]
    if not base.get("cached") and base.get("tokens"):
        out["pretraining"] = rate(base["tokens"], walls.get("base model", 0.0), "tokens")
    sft_tokens = sum(d.get("tokens") or 0 for rounds in report["data"].values() for d in rounds)
    out["sft"] = rate(sft_tokens, wall("sft "), "tokens")
    rollout = wall("synth ") + wall("eval ")
    out["synthesis + evaluation: generated"] = rate(report["generated_tokens"], rollout, "tokens")
    out["synthesis + evaluation: judged"] = rate(report["judged"], rollout, "programs")
    out["synthesis + evaluation: executed"] = rate(report["executions"], rollout, "programs")
    return out


def _fmt(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def markdown(report: dict) -> str:
    lines = [f"# {report['name']}: self-debugging at CPU scale", ""]
    lines += ["Held-out problems (new combinations of the world's operations), pass rates in %. "
              "Round 0 is the pretrained base model.", ""]
    for arm in report["arms"]:
        res = report["results"][arm]
        lines += [f"## {arm.replace('_', '-')} arm", "",
                  "| metric | " + " | ".join(f"round {r['round']}" for r in res) + " |",
                  "| --- |" + " --- |" * len(res)]
        for key, label in ROWS:
            if any(r.get(key) is not None for r in res):
                lines.append(f"| {label} | " + " | ".join(_fmt(r.get(key)) for r in res) + " |")
        lines.append("| repair rate on hidden-constant problems | " + " | ".join(
            _fmt(r["fixed_set_repair_rate_by_kind"]["hidden"]) for r in res) + " |")
        data = report["data"].get(arm, [])
        if data:
            lines += ["", "| SFT round | samples (passed) | repairs (passed) | examples trained "
                      "on | of which new | found so far | steps |",
                      "| --- | --- | --- | --- | --- | --- | --- |"]
            lines += [f"| {d['round']} | {d['samples']} ({d['samples_passed']}) | {d['repairs']} "
                      f"({d['repairs_passed']}) | {d['examples']} {d['by_kind']} | "
                      f"{d['new_examples']} | {d['pool_examples']} | {d['steps']} |"
                      for d in data]
        lines.append("")
    acc = report.get("acceptance", {})
    if acc:
        lines += ["## Targets (issue 18)", "", "| target | value | wanted | met |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {k} | {v['value']} | {v['target']} | {'yes' if v['ok'] else 'no'} |"
                  for k, v in acc.items()]
        lines.append("")
    base = report["base_model"]
    lines += ["## Time", "",
              f"Whole run: {report['wall_s']:.0f} s wall, " + (
                  f"{report['cpu_s']:.0f} s CPU (this process and every Ray process it "
                  "started; the machine may be shared)" if report["cpu_s"] is not None else
                  "CPU not measured (the run joined a Ray cluster: its processes are not "
                  "this driver's)") + ". Base "
              f"model: {'from the cache' if base['cached'] else 'pretrained in this run'}. "
              f"{report['generated_tokens']} tokens generated in {report['generate_s']:.0f} s; "
              f"{report['judged']} programs judged in {report['judge_s']:.0f} s, of which "
              f"{report['executions']} distinct ones ran in the sandbox, each once (isolation: "
              f"{report['isolation']}).", "",
              "| stage | wall s | CPU s |", "| --- | --- | --- |"]
    lines += [f"| {s['stage']} | {s['wall_s']:.1f} | "
              f"{'–' if s['cpu_s'] is None else format(s['cpu_s'], '.1f')} |"
              for s in report["stages"]]
    lines += ["", "Throughput: the same work takes longer on a slower or busier machine; compare "
              "these before comparing wall times.", "",
              "| work | amount | wall s | per second |", "| --- | --- | --- | --- |"]
    for work, t in report["throughput"].items():
        unit = "programs" if "programs" in t else "tokens"
        per_s = "–" if t["per_s"] is None else f"{t['per_s']:,.0f}"
        lines.append(f"| {work} | {t[unit]:,} {unit} | {t['wall_s']:.1f} | {per_s} |")
    meta = report["metadata"]
    lines += ["", f"Seed {meta['seed']}, git {meta['git_revision']}, "
              + ", ".join(f"{k} {v}" for k, v in meta["packages"].items()), ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for arm, style in zip(report["arms"], ("-o", "--s")):
        res = report["results"][arm]
        rounds = [r["round"] for r in res]
        for key, color in (("init@1", "tab:blue"), ("refine@1", "tab:orange")):
            axes[0].plot(rounds, [100 * r[key] for r in res], style, color=color,
                         label=f"{key} ({arm})")
        for key, color in (("fixed_set_repair_rate", "tab:green"), ("resample_rate", "tab:red")):
            axes[1].plot(rounds, [100 * (r[key] or 0) for r in res], style, color=color,
                         label=f"{key.replace('_rate', '').replace('_', ' ')} ({arm})")
    axes[0].set_title("held-out pass@1 (%)")
    axes[1].set_title("repair vs resample of wrong programs (%)")
    for ax in axes:
        ax.set_xlabel("round")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_demo_report(out: Path, report: dict) -> None:
    write_report(out, "demo_report", report, markdown(report))
    plot(report, out / "demo_rounds.png")
