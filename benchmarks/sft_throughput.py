"""SFT throughput: selfdebug's loop (packing, DeepSpeed) against the Hugging Face `Trainer` (padding).

Same model, same training examples (the MBPP fixture unless --data-dir), same batch size
(sequences per step) and maximum sequence length, same optimizer (torch AdamW) and learning
rate, one process each with the same number of threads, one epoch. Only real (non-pad)
tokens count, for both; the first step is left out (warm-up).

    python benchmarks/sft_throughput.py [--model DIR] [--batch 4] [--max-seq-len 1024] [--repeats 3]

With ``--attention sdpa_packed`` the baseline is instead the same loop with ``sdpa``
(transformers' block-diagonal mask over each packed row), e.g. on the demo's data:

    python benchmarks/sft_throughput.py --attention sdpa_packed --max-seq-len 512 \
        --model .cache/demo-base/base-<hash>/model --data-dir runs/demo-cpu/method/round-4/data
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from selfdebug.train.config import SFTConfig


def _config(args) -> SFTConfig:
    from selfdebug.config import resolve_model

    return SFTConfig(
        name="bench", model=resolve_model(args.model),
        data_dirs=[args.data_dir] if args.data_dir else [],
        fixture_problems=args.problems, val_fraction=0.0, max_seq_len=args.max_seq_len,
        epochs=1, micro_batch_size=args.batch, global_batch_size=args.batch, lr=1e-3,
        warmup_steps=1, attn_implementation=args.attention, zero_stage=args.zero_stage, precision="fp32", num_workers=1,
        cpus_per_worker=args.threads, storage_path=args.out, checkpoint_every=10**9,
        eval_every=10**9, seed=0)


def run_selfdebug(cfg: SFTConfig) -> dict:
    """`train_loop` as torchrun would start it (one process, no Ray): tokens/s from its log."""
    from selfdebug.train.loop import train_loop
    from selfdebug.train.metrics import read_metrics

    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_PORT="29541")
    train_loop(asdict(cfg))
    recs = [r for r in read_metrics(cfg.resolved_log_dir()) if r["split"] == "train"]
    # "tokens" is cumulative; step k trained tokens[k] - tokens[k-1] in that / tokens_per_s.
    per_step = [(r["tokens"] - p["tokens"], r["tokens_per_s"]) for p, r in zip(recs, recs[1:])]
    tokens = sum(n for n, _ in per_step)
    seconds = sum(n / tps for n, tps in per_step)
    return {"steps": len(recs), "real_tokens": tokens, "seconds": seconds,
            "tokens_per_s": tokens / seconds,
            "median_step_tokens_per_s": statistics.median(tps for _, tps in per_step)}


def run_hf_trainer(cfg: SFTConfig) -> dict:
    """The same examples through `transformers.Trainer`, padded per batch (its default)."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from selfdebug.train.data import build_examples
    from selfdebug.train.examples import load_tokenizer, tokenize_rows

    torch.set_num_threads(int(cfg.cpus_per_worker))
    tok = load_tokenizer(cfg.model)
    train, _ = build_examples(cfg, Path(tempfile.mkdtemp()))
    rows = tokenize_rows(train, cfg.model, cfg.max_seq_len)
    ds = [{"input_ids": r["input_ids"], "labels": r["labels"],
                             "attention_mask": [1] * len(r["input_ids"])} for r in rows]
    marks: list[tuple[float, int]] = []
    counted = {"tokens": 0}

    class Counting(Trainer):
        def compute_loss(self, model, inputs, *a, **kw):
            counted["tokens"] += int(inputs["attention_mask"].sum())
            return super().compute_loss(model, inputs, *a, **kw)

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            marks.append((time.perf_counter(), counted["tokens"]))

    model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=torch.float32,
                                                 attn_implementation=cfg.attn_implementation)
    targs = TrainingArguments(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=1, num_train_epochs=1, learning_rate=cfg.lr,
        lr_scheduler_type="cosine", warmup_steps=cfg.warmup_steps, optim="adamw_torch",
        adam_beta1=cfg.adam_betas[0], adam_beta2=cfg.adam_betas[1],
        max_grad_norm=cfg.max_grad_norm, logging_steps=10**9, save_strategy="no",
        report_to=[], use_cpu=True, dataloader_num_workers=0, seed=cfg.seed,
        disable_tqdm=True)
    Counting(model=model, args=targs, train_dataset=ds, callbacks=[Clock()],
             data_collator=DataCollatorForSeq2Seq(tok, padding=True)).train()
    (t0, n0), (t1, n1) = marks[0], marks[-1]
    rates = [(n - pn) / (t - pt) for (pt, pn), (t, n) in zip(marks, marks[1:])]
    return {"steps": len(marks), "real_tokens": n1 - n0, "seconds": t1 - t0,
            "tokens_per_s": (n1 - n0) / (t1 - t0),
            "median_step_tokens_per_s": statistics.median(rates)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny", help="local model dir (default: the tiny Llama)")
    p.add_argument("--data-dir", default="", help="synthesis output; default: MBPP fixture")
    p.add_argument("--problems", type=int, default=64, help="fixture size")
    p.add_argument("--batch", type=int, default=4, help="sequences per step")
    p.add_argument("--max-seq-len", type=int, default=1024)
    p.add_argument("--zero-stage", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--attention", default="sdpa",
                   help="the loop's attn_implementation; not sdpa: the baseline is the same "
                        "loop with sdpa instead of the HF Trainer")
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds (median)")
    p.add_argument("--out", default=tempfile.mkdtemp(prefix="sft-bench-"))
    p.add_argument("--only", choices=["selfdebug", "hf"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cfg = _config(args)
    if args.only:  # one side, in its own process (DeepSpeed and Trainer never share one)
        res = run_selfdebug(cfg) if args.only == "selfdebug" else run_hf_trainer(cfg)
        print("RESULT " + json.dumps(res))
        return 0
    # The baseline: the HF Trainer, or (--attention) the same loop with plain sdpa.
    base, base_name = ("hf", "HF Trainer") if args.attention == "sdpa" else \
        ("selfdebug", "loop with sdpa")
    attention = {"selfdebug": args.attention, "baseline": "sdpa"}
    # The machine may be shared: alternate the sides over several rounds, compare medians.
    runs: dict[str, list[dict]] = {"selfdebug": [], "baseline": []}
    for r in range(args.repeats):
        for side in ("selfdebug", "baseline") if r % 2 == 0 else ("baseline", "selfdebug"):
            only = base if side == "baseline" else "selfdebug"
            cmd = [sys.executable, __file__, "--only", only, "--model", cfg.model,
                   "--attention", attention[side],
                   "--data-dir", args.data_dir, "--problems", str(args.problems),
                   "--batch", str(args.batch), "--max-seq-len", str(args.max_seq_len),
                   "--zero-stage", str(args.zero_stage), "--threads", str(args.threads),
                   "--out", str(Path(args.out) / f"{side}-{r}")]
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
                return 1
            runs[side].append(json.loads(line[len("RESULT "):]))
            print(f"round {r}: {side:9s} {runs[side][-1]['tokens_per_s']:9.1f} tokens/s",
                  flush=True)
    s = statistics.median(x["tokens_per_s"] for x in runs["selfdebug"])
    h = statistics.median(x["tokens_per_s"] for x in runs["baseline"])
    print(json.dumps({"config": {k: v for k, v in vars(args).items() if k != "only"},
                      "baseline": base_name, "runs": runs}, indent=2))
    print(f"selfdebug SFT loop ({args.attention}): {s:10.1f} real tokens/s "
          f"(median of {args.repeats})")
    print(f"{base_name:20s}: {h:10.1f} real tokens/s (median of {args.repeats})")
    print(f"ratio              : {s / h:10.2f}x")
    bs, bh = (max(x["tokens_per_s"] for x in runs[k]) for k in ("selfdebug", "baseline"))
    print(f"best of {args.repeats}          : selfdebug {bs:.1f}, {base_name} {bh:.1f}, "
          f"ratio {bs / bh:.2f}x")
    # Less sensitive to bursts of load from other processes: the median step's rate.
    ms, mh = (statistics.median(x["median_step_tokens_per_s"] for x in runs[k])
              for k in ("selfdebug", "baseline"))
    print(f"median step rate   : selfdebug {ms:.1f}, {base_name} {mh:.1f}, "
          f"ratio {ms / mh:.2f}x")
    return 0

if __name__ == "__main__":
    sys.exit(main())
