"""The final model as a plain Hugging Face directory (LoRA merged) that transformers and vLLM load."""

from __future__ import annotations

import contextlib
from pathlib import Path


def full_state_dict(engine, zero_stage: int, rank: int) -> dict | None:
    """The whole model's weights on rank 0 (None elsewhere); a collective under ZeRO-3."""
    module = engine.module
    ctx = contextlib.nullcontext()
    if zero_stage == 3:
        import deepspeed

        ctx = deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None)
    with ctx:
        if rank != 0:
            return None
        return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def save_pretrained(module, state: dict, model_path: str, tokenizer, out_dir: Path,
                    lora: bool) -> Path:
    """Write ``state`` as a HF model to ``out_dir`` (merging LoRA into a fresh base model)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if lora:
        # Rebuild base + adapter on CPU, load the trained weights and merge: works the same
        # whatever ZeRO stage trained it (the live module may be partitioned).
        from peft import get_peft_model
        from transformers import AutoModelForCausalLM

        dtype = next(iter(state.values())).dtype
        base = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        peft_model = get_peft_model(base, module.peft_config["default"])
        missing, unexpected = peft_model.load_state_dict(state, strict=False)
        if unexpected or any("lora_" in k for k in missing):
            raise RuntimeError(f"LoRA export: missing {missing[:5]}, unexpected {unexpected[:5]}")
        merged = peft_model.merge_and_unload()
        merged.save_pretrained(out_dir)
    else:
        module.save_pretrained(out_dir, state_dict=state)
    tokenizer.save_pretrained(out_dir)
    return out_dir
