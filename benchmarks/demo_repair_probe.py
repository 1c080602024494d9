"""Does a demo model read the hidden constant out of the feedback? A repair probe.

For held-out hidden-constant problems, the canonical program with only its constant
changed is the "wrong code"; its feedback (as the sandbox words it) shows ``f(zero) == K``.
Each model samples repairs (transformers, T = 0.8) and the probe counts repairs whose
structure is right, whose constant is right (read from the feedback), and that keep the
wrong program verbatim. Baseline in the same run: guessing, 1 in 9 (digits) or 1 in 18
(letters) of the structure-right repairs.

    python benchmarks/demo_repair_probe.py MODEL_DIR [MODEL_DIR ...] [--problems 30] [--samples 8]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--config", default=str(REPO / "jobs/configs/demo-cpu.yaml"))
    parser.add_argument("--problems", type=int, default=30)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfdebug.config import load_config
    from selfdebug.demo.config import DemoConfig
    from selfdebug.llm import prompts
    from selfdebug.llm.extract import extract_code
    from selfdebug.sandbox.pool import SandboxPool
    from selfdebug.world.families import FAMILIES
    from selfdebug.world.generate import code, generate_world, problems_of
    from selfdebug.world.mutate import wrong_constant

    torch.manual_seed(args.seed)
    cfg = load_config(DemoConfig, args.config)
    recs = [r for r in generate_world(cfg.world)["test"] if r["hidden"]][:args.problems]
    rng = random.Random(args.seed)
    wrong = [code(wrong_constant(r["_spec"], rng)) for r in recs]
    pool = SandboxPool(problems_of(recs), None, 2)
    try:  # the feedback exactly as every stage sees it
        feedback = [v.feedback for v in pool.run_many(
            [(r["task_id"], w) for r, w in zip(recs, wrong)])]
    finally:
        pool.close()
    guess = sum(1 / (18 if FAMILIES[r["family"]].kind == "str" else 9) for r in recs) / len(recs)
    print(f"{len(recs)} held-out hidden-constant problems x {args.samples} repairs; "
          f"guessing baseline: {guess:.1%} of structure-right repairs")
    for model_dir in args.models:
        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        n = struct = right = kept = 0
        for r, bad, fb in zip(recs, wrong, feedback):
            text = prompts.render_prompt(None, prompts.refine_messages(r["prompt"], bad, fb))
            ids = tok(text, return_tensors="pt").input_ids
            with torch.no_grad():
                out = model.generate(ids.repeat(args.samples, 1), max_new_tokens=160,
                                     do_sample=True, temperature=0.8, top_p=1.0, top_k=None)
            want = code(r["_spec"]).strip()
            for row in out:
                reply = tok.decode(row[ids.shape[1]:]).split(prompts.FALLBACK_END)[0]
                got = extract_code(reply).strip()
                n += 1
                same_shape = got.rsplit("+", 1)[0] == want.rsplit("+", 1)[0]
                struct += same_shape
                right += got == want
                kept += got == bad.strip()
        print(f"{model_dir}: structure right {struct}/{n} ({struct / n:.1%}); constant right "
              f"{right}/{n} ({right / max(struct, 1):.1%} of structure-right, guessing "
              f"{guess:.1%}, ratio {right / max(struct, 1) / guess:.2f}x); wrong program "
              f"kept verbatim {kept}/{n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
