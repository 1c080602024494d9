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

import importlib
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from selfdebug.config import resolve_model
from selfdebug.train import checkpoint as ckpt
from selfdebug.train.checkpoint import TrainState
from selfdebug.train.config import SFTConfig
from selfdebug.train.data import epoch_order, load_shard, micro_batches
from selfdebug.train.examples import IGNORE, load_tokenizer
from selfdebug.train.packing import collate


class InjectedFailure(RuntimeError):
    """Raised by ``fail_after_step`` to test resumption."""


def in_ray_train() -> bool:
    try:
        import ray.train

        ray.train.get_context()
        return True
    except (ImportError, RuntimeError):
        return False


def _setup_distributed(cfg: SFTConfig, in_ray: bool) -> tuple[int, int, torch.device]:
    if in_ray:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        rank, world = ctx.get_world_rank(), ctx.get_world_size()
        device = ray.train.torch.get_device()
    else:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        for k, v in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
            os.environ.setdefault(k, v)
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ["LOCAL_RANK"])
        device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
        if not cfg.cpu_shm_comm:
            # DeepSpeed JIT-compiles a shm allreduce op (16-50 s) on first use on CPU;
            # gloo alone is enough for the models we train on CPU.
            # (sys.modules: `import deepspeed.comm.torch` would bind the real torch module,
            # which deepspeed.comm re-exports under that name)
            importlib.import_module("deepspeed.comm.torch")
            sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def ds_config(cfg: SFTConfig, world: int, bf16: bool) -> dict:
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation(world),
        "train_batch_size": cfg.global_batch_size,
        "gradient_clipping": cfg.max_grad_norm,
        "zero_optimization": {"stage": cfg.zero_stage, "contiguous_gradients": True,
                              "overlap_comm": False,
                              "stage3_gather_16bit_weights_on_model_save": True},
        "bf16": {"enabled": bf16},
        # a plain torch AdamW: no JIT-built fused/cpu Adam (DESIGN.md)
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
    }


def build_model(cfg: SFTConfig, model_path: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=dtype, attn_implementation=cfg.attn_implementation)
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora_r > 0:
        from peft import LoraConfig, get_peft_model

        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()
        model = get_peft_model(model, LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.lora_target_modules), task_type="CAUSAL_LM"))
    return model


def warmup_cosine(warmup: int, total: int, min_ratio: float):
    """LR multiplier after ``step`` optimizer steps: linear warmup, then cosine decay."""
    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return fn


def _all_sum(*values: float) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def token_loss_sum(engine, batch: dict, device) -> torch.Tensor:
    """Summed cross-entropy over answer tokens of one micro-batch."""
    batch = {k: v.to(device) for k, v in batch.items()}
    # No attention_mask and no cache: transformers then builds the packed block mask from
    # the restarting position_ids.
    logits = engine(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                    use_cache=False).logits
    # Shift the labels, not the logits: slicing the logits would copy all of them.
    targets = F.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE)
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")


def _n_targets(batch: dict) -> int:
    return int((batch["labels"][:, 1:] != IGNORE).sum())


def _n_real(rows: list[dict]) -> int:
    return sum(len(r["input_ids"]) for r in rows)


def train_step(engine, groups: list[list[dict]], pad_id: int, device, world: int) -> dict:
    """One optimizer step over ``groups`` (one list of rows per micro-batch)."""
    batches = [collate(g, pad_id) for g in groups]
    n_global, tokens = _all_sum(sum(map(_n_targets, batches)), sum(map(_n_real, groups)))
    # DeepSpeed divides by the accumulation steps and averages over workers; undo both so
    # the gradient is that of (sum of token losses) / (answer tokens in the global batch).
    scale = len(batches) * world / max(n_global, 1.0)
    loss_sum = 0.0
    for b in batches:
        loss = token_loss_sum(engine, b, device)
        engine.backward(loss * scale)
        engine.step()
        loss_sum += loss.item()
    (loss_total,) = _all_sum(loss_sum)
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
        loss_sum += token_loss_sum(engine, b, device).item()
        n += _n_targets(b)
    engine.train()
    loss_sum, n = _all_sum(loss_sum, n)
    return loss_sum / n if n else None


def train_loop(config: dict) -> dict:
    """Train per ``config`` (an `SFTConfig` as a dict); returns a summary (rank 0's is complete)."""
    import deepspeed

    cfg = SFTConfig(**config)
    in_ray = in_ray_train()
    rank, world, device = _setup_distributed(cfg, in_ray)
    model_path = resolve_model(cfg.model)
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(model_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scratch = Path(tempfile.mkdtemp(prefix=f"sft-rank{rank}-"))
    train_rows = load_shard("train", cfg, rank, world, model_path, scratch, in_ray)
    val_rows = load_shard("val", cfg, rank, world, model_path, scratch, in_ray)
    shutil.rmtree(scratch, ignore_errors=True)  # rows are in memory now

    gas = cfg.gradient_accumulation(world)
    steps_per_epoch = len(train_rows) // (cfg.micro_batch_size * gas)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_rows)} rows per worker cannot fill one step of "
                         f"{cfg.micro_batch_size} × {gas} rows: lower global_batch_size")
    total = cfg.epochs * steps_per_epoch
    total = min(total, cfg.max_steps) if cfg.max_steps > 0 else total

    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    ds_cfg = ds_config(cfg, world, bf16)
    zero3_init = None
    if cfg.zero_stage == 3:  # from_pretrained then loads straight into ZeRO-3 partitions
        from transformers.integrations import HfDeepSpeedConfig

        zero3_init = HfDeepSpeedConfig(ds_cfg)
    model = build_model(cfg, model_path, torch.bfloat16 if bf16 else torch.float32)
    del zero3_init  # later loads (the LoRA export's base model) must be whole, not partitioned
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.adam_betas),
                                  weight_decay=cfg.weight_decay)
    schedule = warmup_cosine(cfg.warmup_steps, total, cfg.min_lr_ratio)
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=ds_cfg,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule))

    run_dir = Path(cfg.run_dir)
    state = TrainState()
    with ckpt.restored_dir(in_ray, run_dir) as d:
        if d is not None:
            state = ckpt.load(engine, d, rank)
    resumed_at = state.step
    log_dir = cfg.resolved_log_dir()
    log = None
    if rank == 0:
        from selfdebug.train.metrics import MetricsLog

        log = MetricsLog(log_dir, resume_step=resumed_at)
        print(f"[sft] {world} worker(s), {len(train_rows)} train / {len(val_rows)} val rows "
              f"per worker, {steps_per_epoch} steps/epoch, {total} steps, "
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
                                       tokenizer, log, log_dir, len(train_rows),
                                       len(val_rows), bf16) if last else None
                ckpt.commit(engine, state, metrics, rank, in_ray, run_dir,
                            cfg.keep_checkpoints, extra)
            if cfg.fail_after_step == state.step and resumed_at == 0:
                raise InjectedFailure(f"fail_after_step={state.step} (testing resumption)")
            if last:
                break
    if log is not None:
        log.close()
    return {"step": state.step, "val_loss": val_loss, "resumed_at": resumed_at}


def _final_outputs(engine, cfg, state, rank, world, model_path, tokenizer, log, log_dir,
                   n_train, n_val, bf16):
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
                   "train_rows": n_train, "val_rows": n_val,
                   "precision": "bf16" if bf16 else "fp32",
                   "data_dir": cfg.data_dir or "(fixture from MBPP)",
                   "output_dir": str(cfg.resolved_output_dir())}
        write_sft_report(log_dir, asdict(cfg), summary)
        shutil.copytree(log_dir, ckpt_dir / "logs", dirs_exist_ok=True)
        if not in_ray_train():  # under Ray the driver copies the model out of storage
            shutil.copytree(out, cfg.resolved_output_dir(), dirs_exist_ok=True)
    return extra
