"""`SFTConfig`: every knob of `selfdebug sft` in one dataclass (YAML + key=value overrides)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from selfdebug.train.engine import LoraSpec

KINDS = ("refine", "explain_refine", "generate")
PRECISIONS = ("auto", "bf16", "fp32")
ATTENTION = ("sdpa", "sdpa_packed", "eager", "flash_attention_2")
INGEST = ("ray_data", "worker")


class RunPaths:
    """Where a training job (SFT, RL) keeps checkpoints, logs and its exported model; the
    job's dataclass has ``storage_path``, ``name``, ``log_dir`` and ``out_dir``."""

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
        if self.out_dir:
            return Path(self.out_dir).resolve()
        if self.storage_is_local:
            return Path(self.run_dir) / "model"
        return Path("runs", self.name, "model").resolve()


@dataclass
class SFTConfig(RunPaths):
    name: str = "sft"
    model: str = ""  # local dir or hub id; "tiny" = build the tiny local Llama
    seed: int = 0

    # --- data ---
    # Synthesis outputs (each a `selfdebug synth` out_dir, local or s3:// / gs://), read
    # together; [] = the fixture dataset. A plain string is one directory.
    data_dirs: list[str] = field(default_factory=list)
    fixture_problems: int = 64  # size of the MBPP fixture dataset when data_dirs is empty
    mbpp_path: str = ""  # MBPP JSONL for the fixture; "" = ../shared/data/mbpp.jsonl
    # LeDex keeps one distinct correct refinement per wrong sample; false = every correct
    # refinement becomes examples.
    one_refinement_per_sample: bool = False
    # Mix per kind: weight = repetitions per example (0.5 keeps a seeded half, 2 doubles);
    # cap = max examples of that kind before weighting (missing or < 0 = no cap).
    mix_weights: dict[str, float] = field(
        default_factory=lambda: {"refine": 1.0, "explain_refine": 1.0, "generate": 1.0}
    )
    mix_caps: dict[str, int] = field(default_factory=dict)
    val_fraction: float = 0.1  # share of *problems* held out (no task leaks into both)
    max_seq_len: int = 1024  # examples longer than this are dropped (and counted)
    packing: bool = True  # pack examples into max_seq_len rows (else one example a row)
    # ray_data: Ray Data tokenizes and packs in parallel and streams each worker its shard.
    # worker: each worker reads data_dirs and tokenizes them itself (every worker must see
    # them: URIs or a shared filesystem), as under torchrun. For a few thousand examples
    # this skips Ray Data's per-run actors (≈ 10 s of start-up on 2 cores, same rows).
    ingest: str = "ray_data"

    # --- optimisation ---
    epochs: int = 2
    max_steps: int = -1  # cap on optimizer steps (-1 = epochs decide)
    micro_batch_size: int = 1  # rows per worker per forward pass
    # Training EXAMPLES per optimizer step over all workers (not packed rows: see
    # train/schedule.py); rows per step follow from the run's packing factor.
    global_batch_size: int = 8
    lr: float = 2e-5
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 500
    weight_decay: float = 0.0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    max_grad_norm: float = 1.0
    zero_stage: int = 2
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    gradient_checkpointing: bool = False
    # sdpa | sdpa_packed (packed rows: each sequence attends on its own, train/attention.py)
    # | eager | flash_attention_2
    attn_implementation: str = "sdpa"
    lora_r: int = 0  # 0 = full fine-tuning
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: LoraSpec().target_modules)

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
    out_dir: str = ""  # final model copy; "" = <storage_path>/<name>/model when local
    log_dir: str = ""  # TensorBoard + metrics.jsonl; "" = <storage_path>/<name>/logs when local
    checkpoint_every: int = 50  # optimizer steps; the last step is always checkpointed
    keep_checkpoints: int = 2
    eval_every: int = 50  # steps between validation passes (also at start and end)
    log_every: int = 1
    max_failures: int = 0  # Ray Train restarts from the latest checkpoint this many times
    fail_after_step: int = -1  # testing: raise after this step's checkpoint (fresh runs only)

    def validate(self) -> None:
        """Every setting a run would otherwise ignore or misread is an error here."""
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: use one of {PRECISIONS} "
                             "(fp16 is not supported: bf16 on GPUs, fp32 on CPU)")
        if self.precision == "bf16" and not self.use_gpu:
            raise ValueError("precision bf16 needs use_gpu: true (CPU runs train in fp32)")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_stage {self.zero_stage}: use 0, 1, 2 or 3")
        if self.ingest not in INGEST:
            raise ValueError(f"ingest {self.ingest!r}: use one of {INGEST}")
        if self.attn_implementation not in ATTENTION:
            raise ValueError(f"attn_implementation {self.attn_implementation!r}: use one of "
                             f"{ATTENTION}")
        for name in ("epochs", "micro_batch_size", "global_batch_size", "num_workers",
                     "max_seq_len", "checkpoint_every", "eval_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.warmup_steps < 0 or self.lr <= 0:
            raise ValueError(f"warmup_steps must be ≥ 0 and lr > 0 (got {self.warmup_steps}, "
                             f"{self.lr})")
        if self.max_steps > 0 and self.warmup_steps >= self.max_steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} ≥ max_steps {self.max_steps}: "
                             "the learning rate would never reach lr")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if len(self.adam_betas) != 2:
            raise ValueError(f"adam_betas needs two numbers, got {self.adam_betas}")
        bad = sorted((set(self.mix_weights) | set(self.mix_caps)) - set(KINDS))
        if bad:
            raise ValueError(f"unknown example kind(s) in mix_weights/mix_caps: {bad}; "
                             f"known: {list(KINDS)}")
        if self.data_dirs and (self.fixture_problems != 64 or self.mbpp_path):
            raise ValueError("fixture_problems / mbpp_path only apply when data_dirs is empty "
                             f"(data_dirs = {self.data_dirs})")
        lora_set = (self.lora_alpha, self.lora_dropout) != (16, 0.05)
        if self.lora_r == 0 and lora_set:
            raise ValueError("lora_alpha / lora_dropout are set but lora_r is 0 (no LoRA)")

    def lora_spec(self) -> LoraSpec | None:
        if self.lora_r <= 0:
            return None
        return LoraSpec(r=self.lora_r, alpha=self.lora_alpha, dropout=self.lora_dropout,
                        target_modules=list(self.lora_target_modules))
