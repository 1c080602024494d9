"""The per-worker SFT loop: DeepSpeed (ZeRO + bf16 on GPUs, CPU accelerator over gloo on CPU).

`train_loop(config)` runs inside a Ray Train worker (data from ``get_dataset_shard``,
checkpoints through ``ray.train.report``) or on its own under torchrun / as one process
(data built locally, checkpoints under ``<storage_path>/<name>``): it uses ``ray.train``
only when it finds itself in a Ray Train worker.

Loss: mean cross-entropy over the answer tokens of the whole global batch (every
micro-batch and worker), not a mean of per-micro-batch means, so packed rows with many
or few answer tokens weigh what they should.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from selfdebug.config import resolve_model
from selfdebug.train import checkpoint as ckpt
from selfdebug.train.checkpoint import TrainState
from selfdebug.train.config import SFTConfig
from selfdebug.train.data import epoch_order, load_shards, micro_batches
from selfdebug.train.engine import (
    OptimSpec,
    answer_mask,
    build_model,
    distributed_sum,
    ds_config,
    in_ray_train,
    initialize,
    resolve_precision,
    sequence_nll,
    setup_distributed,
    zero3_init,
)
from selfdebug.train.examples import load_tokenizer
from selfdebug.train.packing import collate
from selfdebug.train.schedule import plan_schedule, row_counts


class InjectedFailure(RuntimeError):
    """Raised by ``fail_after_step`` to test resumption."""


def _n_targets(batch: dict) -> int:
    return int(answer_mask(batch["labels"]).sum())


def _n_real(rows: list[dict]) -> int:
    return sum(len(r["input_ids"]) for r in rows)


def train_step(engine, groups: list[list[dict]], pad_id: int, device, world: int) -> dict:
    """One optimizer step over ``groups`` (one list of rows per micro-batch)."""
    batches = [collate(g, pad_id) for g in groups]
    n_global, tokens = distributed_sum(sum(map(_n_targets, batches)),
                                       sum(map(_n_real, groups)))
    # DeepSpeed divides by the accumulation steps and averages over workers; undo both so
    # the gradient is that of (sum of token losses) / (answer tokens in the global batch).
    scale = len(batches) * world / max(n_global, 1.0)
    loss_sum = 0.0
    for b in batches:
        loss = sequence_nll(engine, b, device)
        engine.backward(loss * scale)
        engine.step()
        loss_sum += loss.item()
    (loss_total,) = distributed_sum(loss_sum)
    norm = engine.get_global_grad_norm()
    return {"loss": loss_total / max(n_global, 1.0), "tokens": int(tokens),
            "grad_norm": float(norm) if norm is not None else float("nan")}


@torch.no_grad()
def evaluate(engine, rows: list[dict], cfg: SFTConfig, pad_id: int, device) -> float | None:
    """Mean answer-token loss on the validation rows of all workers."""
    engine.eval()
    loss_sum, n = 0.0, 0
    for i in range(0, len(rows), cfg.micro_batch_size):
        b = collate(rows[i:i + cfg.micro_batch_size], pad_id)
        loss_sum += sequence_nll(engine, b, device).item()
        n += _n_targets(b)
    engine.train()
    loss_sum, n = distributed_sum(loss_sum, n)
    return loss_sum / n if n else None


def train_loop(config: dict) -> dict:
    """Train per ``config`` (an `SFTConfig` as a dict); returns a summary (rank 0's is complete)."""
    cfg = SFTConfig(**config)
    in_ray = in_ray_train()
    rank, world, device = setup_distributed(cpus_per_worker=cfg.cpus_per_worker,
                                            cpu_shm_comm=cfg.cpu_shm_comm)
    model_path = resolve_model(cfg.model)
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(model_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scratch = Path(tempfile.mkdtemp(prefix=f"sft-rank{rank}-"))
    from_ray_data = in_ray and cfg.ingest == "ray_data"
    shards = load_shards(cfg, rank, world, model_path, scratch, from_ray_data)
    train_rows, val_rows = shards["train"], shards["val"]
    shutil.rmtree(scratch, ignore_errors=True)  # rows are in memory now

    examples, rows, tokens = distributed_sum(*row_counts(train_rows))
    plan = plan_schedule(cfg, world=world, examples=int(examples), rows=int(rows),
                         tokens=int(tokens), rows_per_worker=len(train_rows))
    gas, steps_per_epoch, total = plan.grad_accum, plan.steps_per_epoch, plan.total_steps

    dtype = resolve_precision(cfg.precision, device)
    bf16 = dtype == torch.bfloat16
    ds_cfg = ds_config(micro_batch_size=cfg.micro_batch_size, grad_accum=gas, world=world,
                       zero_stage=cfg.zero_stage, bf16=bf16, max_grad_norm=cfg.max_grad_norm)
    partitioned = zero3_init(ds_cfg)  # ZeRO-3: from_pretrained loads straight into partitions
    model = build_model(model_path, dtype=dtype, lora=cfg.lora_spec(),
                        gradient_checkpointing=cfg.gradient_checkpointing,
                        attn_implementation=cfg.attn_implementation)
    del partitioned  # later loads (the LoRA export's base model) must be whole
    engine, _, _ = initialize(model, ds_cfg, OptimSpec(
        lr=cfg.lr, total_steps=total, warmup_steps=cfg.warmup_steps,
        min_lr_ratio=cfg.min_lr_ratio, betas=tuple(cfg.adam_betas),
        weight_decay=cfg.weight_decay))

    run_dir = Path(cfg.run_dir)
    state = TrainState()
    with ckpt.restored_dir(in_ray, run_dir) as d:
        if d is not None:
            state = ckpt.load(engine, d, rank)
    resumed_at = state.step
    log_dir = cfg.resolved_log_dir()
    log = None
    if rank == 0:
        from selfdebug.train.metrics import MetricsLog, log_attempt

        log = MetricsLog(log_dir, resume_step=resumed_at)
        log_attempt(log_dir, resumed_at)  # restarts are counted in the report
        print(f"[sft] {world} worker(s), {len(train_rows)} train / {len(val_rows)} val rows "
              f"per worker, {plan.examples} examples, ≈{plan.examples_per_step:.1f} examples "
              f"and {gas} micro-batch(es) per step, {steps_per_epoch} steps/epoch, "
              f"{total} steps, "
              f"{'resuming at step ' + str(resumed_at) if resumed_at else 'fresh start'}",
              flush=True)

    def validate() -> float | None:
        val = evaluate(engine, val_rows, cfg, pad_id, device) if val_rows else None
        if log is not None and val is not None:
            log.log(state.step, "val", {"loss": val})
        return val

    val_loss = validate() if state.step == 0 else None
    while state.step < total:
        epoch, in_epoch = divmod(state.step, steps_per_epoch)
        order = epoch_order(len(train_rows), cfg.seed, epoch, rank)
        batches = micro_batches(train_rows, order, cfg.micro_batch_size, start=in_epoch * gas)
        for _ in range(in_epoch, steps_per_epoch):
            groups = [next(batches) for _ in range(gas)]
            lr = engine.get_lr()[0]  # the rate this step uses
            t0 = time.perf_counter()
            m = train_step(engine, groups, pad_id, device, world)
            dt = time.perf_counter() - t0
            state.step += 1
            state.tokens += m["tokens"]
            if log is not None and (state.step % cfg.log_every == 0 or state.step == total):
                log.log(state.step, "train", {"loss": m["loss"], "lr": lr,
                                              "grad_norm": m["grad_norm"], "epoch": epoch,
                                              "tokens_per_s": m["tokens"] / dt,
                                              "tokens": state.tokens})
            last = state.step >= total
            if last or state.step % cfg.eval_every == 0:
                val_loss = validate()
            if last or state.step % cfg.checkpoint_every == 0:
                state.finished = last
                metrics = {"step": state.step, "loss": m["loss"], "val_loss": val_loss}
                extra = _final_outputs(engine, cfg, state, rank, world, model_path,
                                       tokenizer, log, log_dir, plan, len(val_rows),
                                       bf16) if last else None
                ckpt.commit(engine, state, metrics, rank, in_ray, run_dir,
                            cfg.keep_checkpoints, extra)
            if cfg.fail_after_step == state.step and resumed_at == 0:
                ckpt.wait_until_registered(in_ray)
                raise InjectedFailure(f"fail_after_step={state.step} (testing resumption)")
            if last:
                break
    if log is not None:
        log.close()
    return {"step": state.step, "val_loss": val_loss, "resumed_at": resumed_at}


def _final_outputs(engine, cfg, state, rank, world, model_path, tokenizer, log, log_dir,
                   plan, n_val, bf16):
    """Gather the weights (collective) and return what rank 0 adds to the last checkpoint."""
    from selfdebug.train.export import full_state_dict, save_pretrained
    from selfdebug.train.report import write_sft_report

    weights = full_state_dict(engine, cfg.zero_stage, rank)
    if rank != 0:
        return None

    def extra(ckpt_dir: Path) -> None:
        out = save_pretrained(engine.module, weights, model_path, tokenizer,
                              ckpt_dir / "model", cfg.lora_r > 0)
        log.tb.flush()
        summary = {"steps": state.step, "world_size": world, "tokens": state.tokens,
                   "train_rows": plan.rows // world, "val_rows": n_val,
                   "examples_per_epoch": plan.examples, "schedule": plan.summary(),
                   "precision": "bf16" if bf16 else "fp32",
                   "data_dirs": list(cfg.data_dirs) or "(fixture from MBPP)",
                   "out_dir": str(cfg.resolved_output_dir())}
        write_sft_report(log_dir, asdict(cfg), summary)
        shutil.copytree(log_dir, ckpt_dir / "logs", dirs_exist_ok=True)
        if not in_ray_train():  # under Ray the driver copies the model out of storage
            shutil.copytree(out, cfg.resolved_output_dir(), dirs_exist_ok=True)
    return extra
