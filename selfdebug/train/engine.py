"""The training engine shared by SFT and the RL learner (policy, value model, reference).

One way to: join the process group (Ray Train worker or torchrun / one process), build a
Hugging Face model (LoRA optional), write the DeepSpeed config, wrap a model in DeepSpeed
(with AdamW + warm-up/cosine, or without an optimizer for a frozen reference), and compute
per-token log-probabilities (SFT's loss and the RL policy / KL terms both come from them).
Checkpoints: ``selfdebug.train.checkpoint``; the exported model: ``selfdebug.train.export``.

Rows may be *packed* (several sequences in one row, ``position_ids`` restarting at 0 for
each): pass ``position_ids`` and no ``attention_mask``, and transformers builds the
block-diagonal causal mask itself (see ``selfdebug.train.packing``).
"""

from __future__ import annotations

import importlib
import math
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from selfdebug.metadata import version_in

# The DeepSpeed versions whose ``deepspeed.comm.torch.build_shm_op`` we replace (a private
# name; tests/test_train_engine.py fails when the installed version leaves this range).
DEEPSPEED_SHM_PATCH_VERSIONS = ("0.16", "0.20")  # [min, max)


@dataclass
class LoraSpec:
    """LoRA adapters (peft) on ``target_modules``; ``r`` = 0 means full fine-tuning."""

    r: int = 0
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def in_ray_train() -> bool:
    """True inside a Ray Train worker (checkpoints and data then go through ``ray.train``)."""
    try:
        import ray.train

        ray.train.get_context()
        return True
    except (ImportError, RuntimeError):
        return False


def skip_deepspeed_shm_build() -> bool:
    """Stop DeepSpeed from JIT-compiling its CPU shm allreduce op (16-50 s on first use);
    gloo alone is enough for the models trained on CPU. ``build_shm_op`` is private: the
    patch is applied only on the DeepSpeed versions it was checked on (else a warning and
    DeepSpeed's own behaviour). Returns whether it was applied."""
    import deepspeed

    # sys.modules: `import deepspeed.comm.torch` would bind the real torch module, which
    # deepspeed.comm re-exports under that name.
    importlib.import_module("deepspeed.comm.torch")
    mod = sys.modules["deepspeed.comm.torch"]
    if not (version_in(deepspeed.__version__, DEEPSPEED_SHM_PATCH_VERSIONS)
            and callable(getattr(mod, "build_shm_op", None))):
        warnings.warn(f"DeepSpeed {deepspeed.__version__}: not skipping the shm op build (the "
                      f"patch is checked for {DEEPSPEED_SHM_PATCH_VERSIONS}); first start "
                      "may take a minute", stacklevel=2)
        return False
    mod.build_shm_op = lambda: None
    return True


def setup_distributed(*, cpus_per_worker: float = 1.0,
                      cpu_shm_comm: bool = False) -> tuple[int, int, torch.device]:
    """Join the process group: (rank, world size, device). Under Ray Train the ranks come
    from its context; else from torchrun's RANK / WORLD_SIZE / LOCAL_RANK (default: one
    process). NCCL on GPUs, gloo on CPU."""
    if in_ray_train():
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
        torch.set_num_threads(max(1, int(cpus_per_worker)))
        if not cpu_shm_comm:
            skip_deepspeed_shm_build()
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """``auto`` → bf16 on GPUs, fp32 on CPU; ``bf16`` / ``fp32`` as named (validated in the
    job configs: no other value reaches here)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp32":
        return torch.float32
    raise ValueError(f"precision {precision!r}: use auto, bf16 or fp32")


def _for_training(model, lora: LoraSpec | None, gradient_checkpointing: bool, task_type: str):
    """No KV cache, optional gradient checkpointing, LoRA-wrapped when ``lora.r > 0``."""
    model.config.use_cache = False
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora is not None and lora.r > 0:
        from peft import LoraConfig, get_peft_model

        if gradient_checkpointing:
            model.enable_input_require_grads()
        model = get_peft_model(model, LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules), task_type=task_type))
    return model


def _known_attention(name: str) -> None:
    """Our own attention implementations are registered with transformers on first use."""
    from selfdebug.train import attention

    if name == attention.NAME:
        attention.register()


def build_model(model_path: str, *, dtype: torch.dtype, lora: LoraSpec | None = None,
                gradient_checkpointing: bool = False, attn_implementation: str = "sdpa"):
    """A causal LM from ``model_path`` for training (no KV cache), LoRA-wrapped when
    ``lora.r > 0``. Under ZeRO-3, build an ``HfDeepSpeedConfig`` first (see `zero3_init`)."""
    from transformers import AutoModelForCausalLM

    _known_attention(attn_implementation)
    model = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=dtype, attn_implementation=attn_implementation)
    return _for_training(model, lora, gradient_checkpointing, "CAUSAL_LM")


def build_value_model(model_path: str, *, dtype: torch.dtype, lora: LoraSpec | None = None,
                      gradient_checkpointing: bool = False, attn_implementation: str = "sdpa"):
    """A critic: the model's transformer with a fresh scalar head per token
    (``AutoModelForTokenClassification``, one label); read it with `token_values`."""
    from transformers import AutoModelForTokenClassification

    _known_attention(attn_implementation)
    model = AutoModelForTokenClassification.from_pretrained(
        model_path, num_labels=1, dtype=dtype, attn_implementation=attn_implementation)
    return _for_training(model, lora, gradient_checkpointing, "TOKEN_CLS")


def zero3_init(ds_cfg: dict):
    """Keep the returned object alive while calling `build_model` under ZeRO-3: transformers
    then loads the weights straight into partitions. Drop it afterwards (later loads, e.g.
    the LoRA export's base model, must be whole). None when not ZeRO-3."""
    if ds_cfg.get("zero_optimization", {}).get("stage") != 3:
        return None
    from transformers.integrations import HfDeepSpeedConfig

    return HfDeepSpeedConfig(ds_cfg)


def ds_config(*, micro_batch_size: int, grad_accum: int, world: int, zero_stage: int,
              bf16: bool, max_grad_norm: float = 1.0, offload_optimizer: bool = False) -> dict:
    """The DeepSpeed config of one engine (train batch = micro × accumulation × world)."""
    zero = {"stage": zero_stage, "contiguous_gradients": True, "overlap_comm": False,
            "stage3_gather_16bit_weights_on_model_save": True}
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch_size * grad_accum * world,
        "gradient_clipping": max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        # a plain torch AdamW: no JIT-built fused/cpu Adam (DESIGN.md)
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
    }


def warmup_cosine(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """LR multiplier after ``step`` optimizer steps: linear warm-up, then cosine decay."""
    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return fn


@dataclass
class OptimSpec:
    """AdamW + linear warm-up + cosine decay to ``lr * min_lr_ratio`` over ``total_steps``."""

    lr: float
    total_steps: int
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0


def initialize(model, ds_cfg: dict, optim: OptimSpec | None):
    """Wrap ``model`` in a DeepSpeed engine: (engine, optimizer, scheduler). With
    ``optim=None`` the engine has no optimizer (a frozen reference model, in eval mode)."""
    import deepspeed

    if optim is None:
        # ZeRO 1/2 partition optimizer state only and want an optimizer: a frozen model
        # runs at stage 0 (whole on each rank); ZeRO-3 keeps its parameter partitions
        # (as OpenRLHF's eval config does).
        zero = dict(ds_cfg.get("zero_optimization", {}))
        if zero.get("stage") != 3:
            zero = {"stage": 0}
        ds_cfg = {**ds_cfg, "zero_optimization": zero}
        engine, *_ = deepspeed.initialize(model=model, config=ds_cfg)
        engine.eval()
        for p in engine.module.parameters():
            p.requires_grad_(False)
        return engine, None, None
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=optim.lr, betas=tuple(optim.betas),
                                  weight_decay=optim.weight_decay)
    schedule = warmup_cosine(optim.warmup_steps, optim.total_steps, optim.min_lr_ratio)
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, config=ds_cfg,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule))
    return engine, optimizer, scheduler


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   position_ids: torch.Tensor | None = None, *,
                   temperature: float = 1.0) -> torch.Tensor:
    """log p(input_ids[:, t+1] | input_ids[:, :t+1]) for every t: shape (batch, seq - 1), fp32.

    ``model`` is a HF causal LM, a peft model or a DeepSpeed engine around one. For packed
    rows pass ``position_ids`` (restarting per sequence) and no ``attention_mask``; the
    position where one sequence ends and the next starts is then meaningless, and callers
    mask it (labels / action masks). ``temperature`` divides the logits (RL: the rollout
    engine's sampling temperature, so the ratio compares like with like).
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=position_ids, use_cache=False).logits[:, :-1]
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    target = input_ids[:, 1:].unsqueeze(-1)
    # gather - logsumexp: never materialises the (batch, seq, vocab) log-softmax
    return logits.gather(-1, target).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def token_values(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The value model's estimate after each token: shape (batch, seq), fp32."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
    return out.logits.squeeze(-1).float()


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` (bool or 0/1) is set."""
    return (values * mask.to(values.dtype)).sum()


def answer_mask(labels: torch.Tensor, ignore: int = -100) -> torch.Tensor:
    """For `token_logprobs`' (batch, seq - 1) output: which positions predict a learned
    token (labels are aligned with input_ids; ``ignore`` marks prompt and padding)."""
    return labels[:, 1:] != ignore


def sequence_nll(model, batch: dict, device) -> torch.Tensor:
    """Summed negative log-likelihood of the labelled tokens of one (packed) micro-batch."""
    batch = {k: v.to(device) for k, v in batch.items()}
    lp = token_logprobs(model, batch["input_ids"], position_ids=batch.get("position_ids"),
                        attention_mask=batch.get("attention_mask"))
    return -masked_sum(lp, answer_mask(batch["labels"]))


def distributed_sum(*values: float) -> list[float]:
    """Element-wise sum of ``values`` over every rank (unchanged when not distributed)."""
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()
