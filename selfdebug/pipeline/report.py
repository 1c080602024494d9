"""The pipeline's report: every step's status, time and cost, and the final comparison
(LeDex Table 2: base, SFT and RL models side by side) — ``run_dir/report.{md,json}``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from selfdebug.metadata import run_metadata
from selfdebug.metadata import write_report as write_pair
from selfdebug.pipeline.config import PipelineConfig, Step

REPORT = "report"
STAGE_REPORTS = {"synth": "out/synth_report.md", "sft": "logs/sft_report.md",
                 "rl": "logs/rl_report.md", "eval": "out/results.md"}


def _cost(o: dict, cfg: PipelineConfig) -> float:
    return (o.get("cpu_hours", 0) * cfg.cost.cpu_hour
            + o.get("gpu_hours", 0) * cfg.cost.gpu_hour)


def comparison(run: Path, steps: list[Step]) -> dict | None:
    """The evaluation's results (read back from its results.json, so a skipped eval step
    reports the same table)."""
    from selfdebug.evaluate.report import table2

    ev = next((s for s in steps if s.kind == "eval"), None)
    if ev is None:
        return None
    path = Path(ev.outputs["results"]) / "results.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return {"table2": table2(data["results"], data["models"], data["benchmarks"],
                             data["modes"], data["ks"]),
            "models": data["models"], "benchmarks": data["benchmarks"],
            "results": data["results"], "path": str(path)}


def write_report(cfg: PipelineConfig, run: Path, steps: list[Step], outcomes: list[dict],
                 wall_s: float) -> dict:
    final = comparison(run, steps)
    rows = []
    for o in outcomes:
        rows.append({"step": o["id"], "kind": o["kind"], "status": o["status"],
                     "fingerprint": o.get("fingerprint"), "wall_s": o.get("wall_s"),
                     "cpu_hours": o.get("cpu_hours"), "gpu_hours": o.get("gpu_hours"),
                     "cost": _cost(o, cfg), "metrics": o.get("metrics"),
                     "report": str(run / o["id"] / STAGE_REPORTS[o["kind"]])})
    data = {"name": cfg.name, "run_dir": str(run), "stages": rows, "comparison": final,
            "this_run_wall_s": wall_s,
            "totals": {k: sum(r[k] or 0 for r in rows)
                       for k in ("wall_s", "cpu_hours", "gpu_hours", "cost")},
            "metadata": run_metadata(seed=cfg.seed, config=asdict(cfg))}
    cur = cfg.cost.currency
    md = [f"# Pipeline report: {cfg.name}", "", f"Run directory: `{run}`; this run took "
          f"{wall_s:.0f} s (skipped stages cost nothing now; their figures are from the run "
          f"that made them).", "", "## Stages", "",
          f"| step | status | wall | CPU·h | GPU·h | cost ({cur}) | fingerprint | report |",
          "|---|---|---:|---:|---:|---:|---|---|"]
    for r in rows:
        md.append(f"| {r['step']} | {r['status']} | {r['wall_s'] or 0:.0f} s | "
                  f"{r['cpu_hours'] or 0:.3f} | {r['gpu_hours'] or 0:.3f} | {r['cost']:.2f} | "
                  f"`{r['fingerprint']}` | `{Path(r['report']).relative_to(run)}` |")
    t = data["totals"]
    md.append(f"| **total** | | {t['wall_s']:.0f} s | {t['cpu_hours']:.3f} | "
              f"{t['gpu_hours']:.3f} | {t['cost']:.2f} | | |")
    md += ["", "Resource-hours integrate the cluster's CPUs and GPUs over each stage's wall "
           "time (an autoscaling cluster is counted at its size at the time).", ""]
    if final:
        md += ["## Final comparison (LeDex Table 2 layout, last refinement round)", "",
               final["table2"], ""]
    for r in rows:
        m = r["metrics"] or {}
        if r["kind"] == "synth":
            md.append(f"- {r['step']}: {m.get('problems')} problems, {m.get('unique_samples')} "
                      f"unique samples ({m.get('correct')} correct), "
                      f"{m.get('correct_refinements')} correct refinements")
        elif r["kind"] in ("sft", "rl"):
            model = next(s for s in steps if s.id == r["step"]).outputs["model"]
            md.append(f"- {r['step']}: model `{model}`")
    write_pair(run, REPORT, data, "\n".join(md))
    return data
