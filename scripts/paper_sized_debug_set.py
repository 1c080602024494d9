"""Write a synthetic debug set of LeDex's size, then plan SFT on it (`selfdebug sft --dry-run`).

LeDex's SFT data: 13,735 correct refinements (one per wrong sample) and the correct initial
solutions. Nothing here is model output: the rows cycle over MBPP's problems (real prompts
and canonical solutions; wrong code = a one-token mutation, as the SFT fixture), with an
explanation of about ``--explanation-chars`` characters, so that token counts are of the
right order. The row layout, writer and manifest are those of `selfdebug synth`.

    python scripts/paper_sized_debug_set.py [--refinements 13735] [--correct-samples 8000]
        [--out DIR] [--tokenizer tiny] [-- key=value ...]   # overrides for sft-paper.yaml
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build(out: Path, mbpp: Path, refinements: int, correct_samples: int,
          explanation_chars: int) -> Path:
    from selfdebug.problems import load_problems
    from selfdebug.synth import shards
    from selfdebug.train.fixture_data import fixture_rows

    problems = [p for p in load_problems(mbpp)]
    debug0, samples0 = fixture_rows(problems)
    correct = [r for r in debug0 if r["correct"] and r["mode"] == "explain_refine"]
    passed = [s for s in samples0 if s["status"] == "passed"]
    filler = (" It fails because the changed expression no longer computes what the "
              "problem asks for; tracing the first test shows the wrong intermediate value.")
    debug, samples = [], []
    for i in range(refinements):
        r = dict(correct[i % len(correct)])
        copy = i // len(correct)  # a distinct wrong sample of the same problem
        r["sample_index"] = 1000 + copy
        r["record_id"] = f"{r['task_id']}/{r['sample_index']}/explain_refine/0"
        r["explanation"] = (r["explanation"] + filler * (explanation_chars // len(filler)))[
            :explanation_chars]
        debug.append(r)
    for i in range(correct_samples):
        s = dict(passed[i % len(passed)])
        s["sample_index"] = i // len(passed)
        samples.append(s)
    files = shards.write_shard(out, 0, samples, debug)
    manifest = shards.read_manifest(out)
    manifest["fingerprint"] = "paper-sized-synthetic"
    manifest["shards"]["0"] = {"task_ids": sorted({p.task_id for p in problems}),
                               "files": files}
    shards.write_manifest(out, manifest)
    (out / "SYNTHETIC.txt").write_text("Synthetic paper-sized debug set for SFT planning; "
                                       "not model output.\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--refinements", type=int, default=13735)
    p.add_argument("--correct-samples", type=int, default=8000,
                   help="correct initial solutions (generate examples)")
    p.add_argument("--explanation-chars", type=int, default=400)
    p.add_argument("--mbpp", default=str(REPO.parent / "shared" / "data" / "mbpp.jsonl"))
    p.add_argument("--out", default="")
    p.add_argument("--tokenizer", default="tiny")
    p.add_argument("overrides", nargs="*", help="key=value over jobs/configs/sft-paper.yaml")
    args = p.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="paper-sized-"))
    build(out, Path(args.mbpp), args.refinements, args.correct_samples, args.explanation_chars)
    cmd = [sys.executable, "-m", "selfdebug.cli", "sft", "--config",
           str(REPO / "jobs" / "configs" / "sft-paper.yaml"), "--dry-run",
           "--tokenizer", args.tokenizer, f"data_dirs=[{out}]", *args.overrides]
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    sys.stderr.write(proc.stderr[-3000:])
    print(proc.stdout)
    if proc.stdout.strip().startswith("{"):
        plan = json.loads(proc.stdout)
        print(f"examples {plan['examples']}, optimizer steps {plan['total_steps']}, warm-up "
              f"fraction {plan['warmup_fraction']:.3f}, tokens per step "
              f"{plan['tokens_per_step']:.0f}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
