"""`SFTConfig`: every knob of `selfdebug sft` in one dataclass (YAML + key=value overrides)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

KINDS = ("refine", "explain_refine", "generate")


def _default_lora_targets() -> list[str]:
    return ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class SFTConfig:
    name: str = "sft"
    model: str = ""  # local dir or hub id; "tiny" = build the tiny local Llama
    seed: int = 0

    # --- data ---
    data_dir: str = ""  # synthesis output (debug/*.parquet, samples/*.parquet); "" = fixture
    fixture_problems: int = 64  # size of the MBPP fixture dataset when data_dir is empty
    mbpp_path: str = ""  # MBPP JSONL for the fixture; "" = ../shared/data/mbpp.jsonl
    # Mix per kind: weight = repetitions per example (0.5 keeps a seeded half, 2 doubles);
    # cap = max examples of that kind before weighting (missing or < 0 = no cap).
    mix_weights: dict[str, float] = field(
        default_factory=lambda: {"refine": 1.0, "explain_refine": 1.0, "generate": 1.0}
    )
    mix_caps: dict[str, int] = field(default_factory=dict)
    val_fraction: float = 0.1  # share of *problems* held out (no task leaks into both)
    max_seq_len: int = 1024  # examples longer than this are dropped (and counted)
    packing: bool = True  # pack examples into max_seq_len rows (else one example a row)

    # --- optimisation ---
    epochs: int = 2
    max_steps: int = -1  # cap on optimizer steps (-1 = epochs decide)
    micro_batch_size: int = 1  # rows per worker per forward pass
    global_batch_size: int = 8  # rows per optimizer step over all workers
    lr: float = 2e-5
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 500
    weight_decay: float = 0.0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    max_grad_norm: float = 1.0
    zero_stage: int = 2
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    gradient_checkpointing: bool = False
    attn_implementation: str = "sdpa"  # sdpa | eager | flash_attention_2
    lora_r: int = 0  # 0 = full fine-tuning
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=_default_lora_targets)

    # --- cluster ---
    ray_address: str = ""  # "" = RAY_ADDRESS or a local cluster
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    cpu_shm_comm: bool = False  # DeepSpeed's shm allreduce on CPU (JIT-builds 16-50 s once)
    # No progress (metrics lines, Ray Data ingest tasks) for this long fails the run naming
    # the resources it waits for (selfdebug.progress); 0 = wait forever.
    stall_timeout_s: float = 1800.0
    fit_resources: bool = True  # scale worker CPUs to the cluster joined (selfdebug.resources)

    # --- outputs ---
    storage_path: str = "runs/sft"  # local dir or s3:// / gs:// URI
    output_dir: str = ""  # final model copy; "" = <storage_path>/<name>/model when local
    log_dir: str = ""  # TensorBoard + metrics.jsonl; "" = <storage_path>/<name>/logs when local
    checkpoint_every: int = 50  # optimizer steps; the last step is always checkpointed
    keep_checkpoints: int = 2
    eval_every: int = 50  # steps between validation passes (also at start and end)
    log_every: int = 1
    max_failures: int = 0  # Ray Train restarts from the latest checkpoint this many times
    fail_after_step: int = -1  # testing: raise after this step's checkpoint (fresh runs only)

    def gradient_accumulation(self, world_size: int) -> int:
        per_step = self.micro_batch_size * world_size
        if self.global_batch_size % per_step:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} is not a multiple of "
                f"micro_batch_size × workers = {per_step}"
            )
        return self.global_batch_size // per_step

    @property
    def storage_is_local(self) -> bool:
        return "://" not in self.storage_path or self.storage_path.startswith("file://")

    @property
    def run_dir(self) -> str:
        """Where this run's checkpoints live (a URI when storage is remote)."""
        base = self.storage_path.removeprefix("file://")
        if self.storage_is_local:
            base = os.path.abspath(base)
        return f"{base.rstrip('/')}/{self.name}"

    def resolved_log_dir(self) -> Path:
        if self.log_dir:
            return Path(self.log_dir).resolve()
        if self.storage_is_local:
            return Path(self.run_dir) / "logs"
        return Path("runs", self.name, "logs").resolve()

    def resolved_output_dir(self) -> Path:
        if self.output_dir:
            return Path(self.output_dir).resolve()
        if self.storage_is_local:
            return Path(self.run_dir) / "model"
        return Path("runs", self.name, "model").resolve()
