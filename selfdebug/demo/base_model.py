"""The base model: a tokenizer and a tiny Llama trained from scratch on the world.

Pretraining data (why each part, issue 18): description → code pairs from training
combinations, with ``mutated_fraction`` of the targets replaced by a wrong program (so the
base model makes realistic mistakes), plus ``repair_fraction`` repair-format examples with real
sandbox feedback (so the base model knows the repair prompt; some "fixes" are wrong too:
``repair_noise``). ``repair_hidden_share`` of them come from hidden-constant programs
(without them a repair drops the constant line: 0 of 120 kept the structure), half of
those with a wrong constant (``repair_constant_share``): the base learns that a fix may
change the constant, not yet where the right one comes from (0 of 43 structure-right
repairs copied it from the feedback; they guess). Reading it out of the feedback is
what self-bootstrapping must teach, starting from the lucky guesses that pass.

The prompts are `llm.prompts` messages, rendered as every stage renders them, and the
training is the SFT stage itself (its loop, answer-only loss) on ready-made examples.
The result is cached under ``cache_dir/base-<config hash>``: a rerun skips pretraining.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from selfdebug.demo.config import BaseModelConfig
from selfdebug.llm import prompts
from selfdebug.world.families import FAMILIES
from selfdebug.world.generate import (
    WorldConfig,
    code,
    generate_split,
    problems_of,
    split_combinations,
    test_inputs,
)
from selfdebug.world.mutate import mutate, wrong_constant

REPO = Path(__file__).resolve().parents[2]
STAMP = "base_model.json"


def _example(kind: str, task_id: str, i: int, messages: list[dict], answer_code: str) -> dict:
    return {"example_id": f"{kind}:{task_id}:{i}", "task_id": task_id, "kind": kind,
            "messages": json.dumps(messages), "answer": prompts.assistant_answer(answer_code)}


def pretraining_examples(world: WorldConfig, base: BaseModelConfig, seed: int,
                         sandbox_workers: int = 2) -> list[dict]:
    """Generate and repair examples (dicts in `train.examples` form)."""
    from selfdebug.sandbox.pool import SandboxPool

    cfg = WorldConfig(**{**asdict(world), "seed": world.seed})
    records = generate_split(cfg, "pretrain", split_combinations(cfg)["train"], base.problems)
    rng = random.Random(f"{seed}:pretrain-data")
    out = []
    for r in records:
        spec = r["_spec"]
        target = spec
        if rng.random() < base.mutated_fraction:
            target = mutate(spec, test_inputs(spec, 4, random.Random(r["task_id"])), rng) or spec
        out.append(_example("generate", r["task_id"], 0, prompts.generate_messages(r["prompt"]),
                            code(target)))
    regular = [r for r in records if not FAMILIES[r["family"]].hidden]
    hidden = [r for r in records if FAMILIES[r["family"]].hidden]
    n_repair = round(base.repair_fraction * len(out) / (1 - base.repair_fraction))
    wrong = []
    for k in range(n_repair):
        pick_hidden = hidden and rng.random() < base.repair_hidden_share
        r = hidden[k % len(hidden)] if pick_hidden else regular[k % len(regular)]
        inputs = eval(r["inputs"])  # noqa: S307  our own repr of plain literals
        if pick_hidden and rng.random() < base.repair_constant_share:
            m = wrong_constant(r["_spec"], rng)
        else:
            m = mutate(r["_spec"], inputs, rng, constant=False)
        if m is None:
            continue
        fix = r["_spec"]
        if rng.random() < base.repair_noise:
            fix = mutate(r["_spec"], inputs, rng, constant=False) or fix
        wrong.append((r, k, code(m), code(fix)))
    # Real feedback for the wrong programs: the sandbox, exactly as every stage sees it.
    pool = SandboxPool(problems_of([w[0] for w in wrong]), None, sandbox_workers)
    try:
        verdicts = pool.run_many([(r["task_id"], bad) for r, _, bad, _ in wrong])
    finally:
        pool.close()
    for (r, k, bad, fix), v in zip(wrong, verdicts):
        out.append(_example("refine", r["task_id"], k + 1,
                            prompts.refine_messages(r["prompt"], bad, v.feedback), fix))
    return out


def _texts(examples: list[dict]):
    for e in examples:
        yield prompts.render_prompt(None, json.loads(e["messages"])) + e["answer"] + \
            prompts.FALLBACK_END


def build_untrained(out: Path, examples: list[dict], base: BaseModelConfig, seed: int) -> Path:
    """Tokenizer (BPE on the pretraining texts, digits split) and a random-init Llama."""
    from selfdebug.llm import tiny_model as tm

    tokenizer = tm._train_tokenizer(base.vocab_size, 0, base.max_position_embeddings,
                                    texts=_texts(examples), split_digits=True)
    settings = tm._settings(base.vocab_size, base.hidden_size, base.layers, base.heads,
                            base.intermediate_size, base.max_position_embeddings, 0, seed)
    model = tm._build_model(tokenizer, settings)
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    return out


def write_examples(examples: list[dict], data_dir: Path) -> Path:
    """``data_dir/examples/part-0.parquet``: what `train.examples.raw_examples` reads."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (data_dir / "examples").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(examples), data_dir / "examples" / "part-0.parquet")
    return data_dir


def sft_config(name: str, model: str, data_dir: Path, work: Path, out: Path, *, lr: float,
               warmup: int, batch: int, mbs: int, max_seq_len: int, seed: int,
               epochs: int = 1, max_steps: int = -1, workers: int = 1,
               cpus: float = 2.0, min_lr_ratio: float = 0.1, packing: bool = True,
               attention: str = "sdpa"):
    """The SFT stage's config for one of the demo's trainings (no validation split;
    ``batch`` in examples per optimizer step)."""
    from selfdebug.train.config import SFTConfig

    cfg = SFTConfig(
        name=name, model=model, seed=seed, data_dirs=[str(data_dir)], val_fraction=0.0,
        max_seq_len=max_seq_len, packing=packing, attn_implementation=attention,
        epochs=epochs, max_steps=max_steps,
        micro_batch_size=mbs, global_batch_size=batch, lr=lr, min_lr_ratio=min_lr_ratio,
        warmup_steps=warmup, weight_decay=0.0, num_workers=workers, cpus_per_worker=cpus,
        storage_path=str(work / "sft"), out_dir=str(out), log_dir=str(work / "logs"),
        checkpoint_every=10**9, eval_every=10**9, log_every=25, keep_checkpoints=1,
        # a few thousand local examples: the worker tokenizes them in about a second,
        # where Ray Data's per-run actors take ≈ 10 s to start on 2 cores (same rows)
        ingest="worker",
        # one retry: on a starved machine Ray Train's placement-group cleaner can take a
        # state-API miss for a dead controller and remove a live run's placement group
        # (seen once here at load 20-80; upstream: ray-project/ray PR 65447's review)
        max_failures=1)
    cfg.validate()
    return cfg


def cache_path(base: BaseModelConfig, world: WorldConfig, seed: int) -> Path:
    root = Path(base.cache_dir)
    root = root if root.is_absolute() else REPO / root
    return root / f"base-{base.fingerprint(world, seed)}"


def pretrained_base(world: WorldConfig, base: BaseModelConfig, seed: int,
                    log: Callable[[str], None] = print, sandbox_workers: int = 2,
                    resident=None) -> dict:
    """The pretrained base model, from the cache or trained now (Ray must be up; by
    ``resident``, a `train.resident.ResidentTrainer`, when given).

    Returns {"path", "cached", "seconds", "examples", "fingerprint"}.
    """
    from selfdebug.llm.tiny_model import _lock
    from selfdebug.train.cli import run as run_sft

    final = cache_path(base, world, seed)
    stamp = final / STAMP
    with _lock(final):
        if stamp.is_file():
            info = json.loads(stamp.read_text())
            log(f"base model: pretrained model found in the cache ({final}, config hash "
                f"{info['fingerprint']}): skipping pretraining")
            return {**info, "path": str(final / "model"), "cached": True}
        t0 = time.time()
        work = Path(tempfile.mkdtemp(prefix=".pretrain-", dir=final.parent))
        try:
            examples = pretraining_examples(world, base, seed, sandbox_workers)
            kinds = {k: sum(e["kind"] == k for e in examples) for k in ("generate", "refine")}
            log(f"base model: pretraining from scratch on {len(examples)} examples {kinds}, "
                f"{base.steps} steps at lr {base.lr}")
            init = build_untrained(work / "init", examples, base, seed)
            data = write_examples(examples, work / "data")
            cfg = sft_config("pretrain", str(init), data, work, work / "model", lr=base.lr,
                             warmup=base.warmup_steps, batch=base.batch_examples,
                             mbs=base.micro_batch_size, max_seq_len=base.max_seq_len,
                             seed=seed, epochs=1000, max_steps=base.steps,
                             attention=base.attention)
            summary = run_sft(cfg, resident)
            final.mkdir(parents=True, exist_ok=True)
            if (final / "model").exists():
                shutil.rmtree(final / "model")
            shutil.copytree(work / "model", final / "model")
            shutil.copytree(work / "logs", final / "logs", dirs_exist_ok=True)
            info = {"fingerprint": base.fingerprint(world, seed), "seconds": time.time() - t0,
                    "examples": kinds, "steps": summary.get("steps"),
                    "tokens": summary.get("tokens")}
            stamp.write_text(json.dumps(info, indent=2) + "\n")  # last: marks it complete
        finally:
            shutil.rmtree(work, ignore_errors=True)
    log(f"base model: pretrained in {info['seconds']:.0f} s → {final / 'model'}")
    return {**info, "path": str(final / "model"), "cached": False}
