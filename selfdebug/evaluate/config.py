"""`EvalConfig`: every knob of `selfdebug eval` in one dataclass (YAML + key=value overrides)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field

from selfdebug.config import SandboxSection
from selfdebug.llm.config import EngineSection, SamplingConfig
from selfdebug.problems.shots import FewShotConfig

MODES = ("refine", "explain_refine")  # the two refinement chains (LeDex §4)
ENGINES = ("vllm", "oracle", "empty")  # oracle / empty: test doubles, see oracle.py


@dataclass
class ModelSpec:
    name: str  # row label in the table; also the results sub-directory
    path: str = ""  # local dir or hub name; "tiny" = the tiny local Llama (built on demand)
    # "vllm" = the real model. "oracle" / "empty" are TEST DOUBLES standing in for a model
    # (canonical solution / empty reply); they never stand in for the sandbox.
    engine: str = "vllm"

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"model {self.name!r}: engine must be one of {ENGINES}")
        if self.engine == "vllm" and not self.path:
            raise ValueError(f"model {self.name!r}: needs a path (local dir, hub name, 'tiny')")


@dataclass
class BenchmarkSpec:
    name: str  # column label, e.g. HumanEval, MBPP, HumanEval+, MBPP+
    source: str  # file, "humaneval", or a dataset name (see selfdebug.problems.load_problems)
    split: str = ""  # MBPP split ("test" for evaluation); "" = none
    limit: int = 0  # first N tasks (0 = all)
    task_ids: list[str] = field(default_factory=list)  # explicit subset (after split/limit)
    plus: bool = True  # EvalPlus: base + plus inputs (False = base inputs only)
    challenge: bool = False  # MBPP: also challenge_test_list (reported numbers use test_list)
    date_from: str = ""  # LiveCodeBench release-date window, YYYY-MM-DD inclusive ("" = open)
    date_to: str = ""


@dataclass
class EvalConfig:
    name: str = "eval"
    out_dir: str = "runs/eval"  # results directory (re-running into it resumes)
    seed: int = 0
    models: list[ModelSpec] = field(default_factory=list)
    benchmarks: list[BenchmarkSpec] = field(default_factory=list)

    n: int = 100  # initial samples per task (paper: 100)
    rounds: int = 3  # refinement rounds per chain (paper: 3)
    ks: list[int] = field(default_factory=lambda: [1, 10])
    modes: list[str] = field(default_factory=lambda: list(MODES))
    # Init prompts of models without a chat template (base models): k shots from a prompt
    # split, as LeDex prompts its base models (3-shot); k = 0: none
    few_shot: FewShotConfig = field(default_factory=FewShotConfig)
    # The `sampling` section of every job (llm.config.SamplingConfig); here its n and seed
    # come from the top-level `n` and `seed` (and refine_seeded), so they must stay unset.
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # initial samples
    refine_sampling: SamplingConfig = field(default_factory=SamplingConfig)
    # Refinements are one request per wrong sample. Seeded requests are deterministic per
    # prompt, so identical wrong programs of a task would all get the *same* refinement
    # (correlated samples bias pass@k>1). Default: unseeded, independent draws.
    refine_seeded: bool = False

    # one engine setup for every vLLM model; engine.model and engine.seed are set per
    # model and from `seed`
    engine: EngineSection = field(default_factory=lambda: EngineSection(max_model_len=4096))
    sandbox: SandboxSection = field(
        default_factory=lambda: SandboxSection(actors=2, cpus_per_actor=0.25))
    ray_address: str = ""  # "" = RAY_ADDRESS or a local cluster
    # A stage with no progress (Ray Data tasks) for this long fails naming the resources
    # it waits for (selfdebug.progress); 0 = wait forever.
    stall_timeout_s: float = 1800.0
    fit_resources: bool = True  # scale actor CPUs to the cluster joined (selfdebug.resources)

    def __post_init__(self):
        self.few_shot.validate()
        bad = [m for m in self.modes if m not in MODES]
        if bad:
            raise ValueError(f"unknown mode(s) {bad}; choose from {MODES}")
        if self.n < 1 or self.rounds < 0:
            raise ValueError("n must be ≥ 1 and rounds ≥ 0")
        for key in ("sampling", "refine_sampling"):
            section = getattr(self, key)
            if section.n != 1 or section.seed is not None:
                raise ValueError(f"{key}.n / {key}.seed would be ignored: evaluation takes "
                                 "the top-level n (samples per task) and seed "
                                 "(+ refine_seeded)")
        for what, names in (("model", [m.name for m in self.models]),
                            ("benchmark", [b.name for b in self.benchmarks])):
            dup = {x for x in names if names.count(x) > 1}
            if dup:
                raise ValueError(f"duplicate {what} name(s): {sorted(dup)}")

    def model(self, name: str) -> ModelSpec:
        return next(m for m in self.models if m.name == name)

    def benchmark(self, name: str) -> BenchmarkSpec:
        return next(b for b in self.benchmarks if b.name == name)


def slug(name: str) -> str:
    """A file-system safe form of a model/benchmark label (``HumanEval+`` → ``HumanEval_plus``)."""
    s = name.replace("+", "_plus").replace("/", "__")
    return re.sub(r"[^A-Za-z0-9_.-]", "_", s)


def _settings(sampling: SamplingConfig) -> dict:
    """A sampling section without n and seed (fixed here; also the hash of results written
    before the section was the shared SamplingConfig)."""
    return {k: v for k, v in asdict(sampling).items() if k not in ("n", "seed")}


def unit_fingerprint(cfg: EvalConfig, model: str, benchmark: str, mode: str) -> str:
    """Hash of every setting that changes a (model, benchmark, mode) shard's content.

    ``rounds`` is left out on purpose: raising it continues the existing chains.
    """
    stage = _settings(cfg.sampling) if mode == "init" else {
        **_settings(cfg.refine_sampling), "refine_seeded": cfg.refine_seeded}
    # benchmark options left at their defaults are left out: results written before the
    # option existed keep their fingerprint
    bench = {k: v for k, v in asdict(cfg.benchmark(benchmark)).items()
             if k not in ("challenge", "date_from", "date_to") or v}
    blob = {"model": asdict(cfg.model(model)), "benchmark": bench,
            "n": cfg.n, "seed": cfg.seed, "mode": mode, "sampling": stage,
            "init_sampling": _settings(cfg.sampling)}
    if cfg.few_shot.k:  # the Init prompts carry shots (absent: earlier results stay valid)
        blob["few_shot"] = asdict(cfg.few_shot)
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]
