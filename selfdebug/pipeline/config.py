"""`PipelineConfig` and the plan it makes: which stage runs with which config.

Each stage section (``synth:``, ``sft:``, ``rl:``, ``eval:``) is that job's own config —
optionally a ``config: FILE`` (one of jobs/configs/*.yaml) with keys over it — and the
pipeline fills in what connects the stages: the model each stage starts from, where it
writes, and where the next stage reads from. Those wired keys always win over the
section, so a stage's inputs are exactly the previous stage's outputs as recorded, never
a directory found by globbing.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from selfdebug.config import ConfigError
from selfdebug.ray_utils import lost_in_job

REPO = Path(__file__).resolve().parents[2]
KINDS = {  # stage kind -> (config class, run function)
    "synth": ("selfdebug.synth.config:SynthConfig", "selfdebug.synth.cli:run"),
    "sft": ("selfdebug.train.config:SFTConfig", "selfdebug.train.cli:run"),
    "rl": ("selfdebug.rl.config:RLConfig", "selfdebug.rl.cli:run"),
    "eval": ("selfdebug.evaluate.config:EvalConfig", "selfdebug.evaluate.pipeline:run_eval"),
}
ORDER = ("synth", "sft", "rl", "eval")
# Keys that change how a stage runs, not what it produces: left out of fingerprints
# (a nested set: those keys of that section).
RUN_ONLY_KEYS: dict[str, Any] = {
    **dict.fromkeys(("ray_address", "stall_timeout_s", "fit_resources", "overwrite",
                     "num_workers", "cpus_per_worker", "cpu_shm_comm", "max_failures",
                     "engine", "refine_engine", "map_cpus", "api_actors", "checkpoint_every",
                     "keep_checkpoints", "fail_after_step", "log_every", "name"), True),
    "sandbox": {"actors", "workers_per_actor", "cpus_per_actor", "batch_size"},
}


def load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def rl_available() -> bool:
    try:
        importlib.import_module("selfdebug.rl.cli")
        return True
    except ImportError:
        return False


def _default_stages() -> list[str]:
    return ["synth", "sft", "rl", "eval"] if rl_available() else ["synth", "sft", "eval"]


@dataclass
class CostRates:
    """Prices per resource-hour for the report's cost column (0 = count hours only)."""

    cpu_hour: float = 0.0
    gpu_hour: float = 0.0
    currency: str = "USD"


@dataclass
class PipelineConfig:
    name: str = "pipeline"
    # Everything this run writes. Inside a `ray job submit` job it must be absolute (or a
    # path every node shares): the job's working directory is deleted after the job.
    run_dir: str = "runs/pipeline"
    seed: int = 0
    model: str = "tiny"  # the base model: local dir, hub id, or "tiny"
    stages: list[str] = field(default_factory=_default_stages)
    rounds: int = 1  # synth → sft repeated (self-bootstrap): round k starts from round k-1's SFT
    # SFT's data_dirs: "synth" (this round's synthesis output), "fixture" (reference
    # solutions of MBPP problems as fixes, built in the step's directory: for the tiny CPU
    # model, whose own fixes are ~never correct), or any synthesis output dir / URI.
    sft_data: list[str] = field(default_factory=lambda: ["synth"])
    fixture_problems: int = 64  # sft_data "fixture": MBPP problems in it
    eval_every_round: bool = False  # evaluate every round's SFT model, not only the last
    synth: dict[str, Any] = field(default_factory=dict)
    sft: dict[str, Any] = field(default_factory=dict)
    rl: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    stall_timeout_s: float = 1800.0  # every stage: no progress this long fails it
    ray_address: str = ""  # "" = RAY_ADDRESS (set by `ray job submit`) or a local cluster
    cost: CostRates = field(default_factory=CostRates)

    def validate(self) -> None:
        bad = [s for s in self.stages if s not in KINDS]
        if bad or not self.stages:
            raise ConfigError(f"stages {self.stages}: each one of {list(ORDER)}")
        if [s for s in ORDER if s in self.stages] != list(self.stages):
            raise ConfigError(f"stages {self.stages} must keep the order {list(ORDER)}")
        if "rl" in self.stages and not rl_available():
            raise ConfigError("stage 'rl' needs selfdebug.rl, which this installation lacks; "
                              "drop it from stages")
        if self.rounds < 1:
            raise ConfigError(f"rounds must be ≥ 1, got {self.rounds}")
        if "sft" in self.stages and "synth" in self.sft_data and "synth" not in self.stages:
            raise ConfigError("sft_data names 'synth' but stages has no synth stage")
        if lost_in_job({"run_dir": self.run_dir}):
            raise ConfigError(
                f"run_dir {self.run_dir!r} is relative and this driver runs in a Ray job's "
                f"unpacked working directory ({os.getcwd()}), which Ray deletes: set "
                f"run_dir to an absolute path on storage the driver keeps (e.g. a volume "
                f"every node mounts) or pass run_dir=... on the command line")


def section(cfg: PipelineConfig, kind: str) -> dict[str, Any]:
    """A stage section as a plain dict: ``config: FILE`` read, the section's keys over it."""
    data = dict(getattr(cfg, kind) or {})
    file = data.pop("config", None)
    base: dict[str, Any] = {}
    if file:
        path = Path(file)
        cands = [path] if path.is_absolute() else [Path.cwd() / path, REPO / path]
        found = next((c for c in cands if c.is_file()), None)
        if found is None:
            raise ConfigError(f"{kind}.config: {file} not found (tried "
                              f"{', '.join(map(str, cands))})")
        base = yaml.safe_load(found.read_text()) or {}
    return _merge(base, data)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@dataclass
class Step:
    """One stage run: ``id`` names its directory under run_dir."""

    id: str
    kind: str
    round: int
    data: dict[str, Any]  # the stage config (wired), before typing
    outputs: dict[str, str]  # what later steps read: model, data_dir, results
    after: list[str]  # ids of the steps whose outputs it reads
    fixture: str = ""  # sft: build the MBPP fixture dataset here first (sft_data: fixture)
    fixture_problems: int = 0

    def typed(self) -> Any:
        cls = load(KINDS[self.kind][0])
        cfg = _from_dict(cls, self.data)
        if hasattr(cfg, "validate"):
            cfg.validate()
        return cfg

    def content(self) -> dict[str, Any]:
        """What decides this step's output (fingerprinted)."""
        out = {}
        for k, v in self.data.items():
            drop = RUN_ONLY_KEYS.get(k)
            if drop is True:
                continue
            out[k] = {a: b for a, b in v.items() if a not in drop} \
                if drop and isinstance(v, dict) else v
        return out


def _from_dict(cls, data: dict) -> Any:
    from selfdebug.config import _build

    return _build(cls, data, cls.__name__)


def fingerprint(step: Step, upstream: list[str]) -> str:
    blob = json.dumps({"kind": step.kind, "content": step.content(), "upstream": upstream,
                       "fixture_problems": step.fixture_problems}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _fields(kind: str) -> set[str]:
    from dataclasses import fields

    return {f.name for f in fields(load(KINDS[kind][0]))}


def plan(cfg: PipelineConfig) -> list[Step]:
    """The steps of ``cfg`` in order, each with its wired config."""
    run = Path(cfg.run_dir) if "://" in cfg.run_dir else Path(cfg.run_dir).resolve()
    steps: list[Step] = []
    shared = {"ray_address": cfg.ray_address, "stall_timeout_s": cfg.stall_timeout_s}

    def common_for(kind: str) -> dict:  # only the keys that stage's config has
        return {k: v for k, v in shared.items() if k in _fields(kind)}

    model, model_step, sft_models, data_dirs = cfg.model, [], [], []
    rounds = cfg.rounds if {"synth", "sft"} & set(cfg.stages) else 1
    for k in range(1, rounds + 1):
        synth_out = None
        if "synth" in cfg.stages:
            sid = f"r{k}-synth"
            synth_out = str(run / sid / "out")
            data = _merge(section(cfg, "synth"), {
                **common_for("synth"), "name": sid, "model": model, "out_dir": synth_out,
                "seed": cfg.seed + k - 1, "overwrite": False})
            steps.append(Step(sid, "synth", k, data, {"data_dir": synth_out}, model_step))
            data_dirs.append(synth_out)
        if "sft" in cfg.stages:
            sid = f"r{k}-sft"
            out = run / sid
            fixture = str(out / "fixture") if "fixture" in cfg.sft_data else ""
            data_dirs = [synth_out if s == "synth" else fixture if s == "fixture" else s
                         for s in cfg.sft_data if s != "synth" or synth_out]
            sft = section(cfg, "sft")
            if data_dirs:  # the stage's own fixture settings apply to an empty data_dirs only
                sft.pop("fixture_problems", None)
                sft.pop("mbpp_path", None)
            data = _merge(sft, {
                **common_for("sft"), "name": "sft", "model": model, "seed": cfg.seed,
                "data_dirs": data_dirs, "storage_path": str(out / "checkpoints"),
                "out_dir": str(out / "model"), "log_dir": str(out / "logs")})
            after = model_step + ([f"r{k}-synth"] if synth_out else [])
            steps.append(Step(sid, "sft", k, data, {"model": str(out / "model")}, after,
                              fixture, cfg.fixture_problems if fixture else 0))
            model, model_step = str(out / "model"), [sid]
            sft_models.append((f"SFT r{k}" if rounds > 1 else "SFT", model, sid))
    if "rl" in cfg.stages:
        out = run / "rl"
        data = _merge(section(cfg, "rl"), {
            **common_for("rl"), "name": "rl", "model": model, "seed": cfg.seed, "data_dirs": data_dirs,
            "storage_path": str(out / "checkpoints"), _out_key("rl"): str(out / "model"),
            "log_dir": str(out / "logs")})
        steps.append(Step("rl", "rl", rounds, data, {"model": str(out / "model")},
                          model_step + [s.id for s in steps if s.kind == "synth"]))
        model, model_step = str(out / "model"), ["rl"]
    if "eval" in cfg.stages:
        models = [{"name": "base", "path": cfg.model}]
        picked = sft_models if cfg.eval_every_round else sft_models[-1:]
        models += [{"name": n, "path": p} for n, p, _ in picked]
        if "rl" in cfg.stages:
            models.append({"name": "SFT+RL" if sft_models else "RL", "path": model})
        data = _merge(section(cfg, "eval"), {
            **common_for("eval"), "name": "eval", "seed": cfg.seed, "models": models,
            "out_dir": str(run / "eval" / "out")})
        after = [s for _, _, s in picked] + (["rl"] if "rl" in cfg.stages else [])
        steps.append(Step("eval", "eval", rounds, data,
                          {"results": str(run / "eval" / "out")}, after))
    return steps


def _out_key(kind: str) -> str:
    """The job's output key: ``out_dir`` (the config vocabulary), ``output_dir`` where a
    job config still has that name."""
    return "out_dir" if "out_dir" in _fields(kind) else "output_dir"


def to_dict(cfg: PipelineConfig) -> dict[str, Any]:
    return asdict(cfg)
