"""`SynthConfig`: every knob of `selfdebug synth` (YAML + key=value overrides)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from selfdebug.config import SandboxSection
from selfdebug.llm.config import EngineSection, SamplingConfig
from selfdebug.llm.teacher import TeacherConfig
from selfdebug.problems.shots import FewShotConfig

REPO = Path(__file__).resolve().parents[2]
MODES = ("refine", "explain_refine")
DEFAULT_SOURCE = "../shared/data/mbpp.jsonl"  # relative to the repository root


@dataclass
class SourceSpec:
    """One problem source of a run (LeDex: MBPP-train, APPS-train, CodeContests-train)."""

    source: str  # file or dataset name, as `source` below
    split: str = ""  # this source's split ("" = all of a file; see problems.load_problems)
    limit: int | None = None  # first N problems of it (after the split)


@dataclass
class SynthConfig:
    name: str = "synth"
    out_dir: str = "runs/synth"
    seed: int = 0
    ray_address: str = ""  # "" = RAY_ADDRESS or a local cluster

    # problems
    source: str = DEFAULT_SOURCE  # file (relative: to the cwd, else the repo root) or name
    split: str = "train"  # MBPP split; "" = every problem in the file
    limit: int | None = None  # first N problems (after the split)
    # several sources in one run, a split each (replaces source/split/limit when set)
    sources: list[SourceSpec] = field(default_factory=list)
    shard_size: int = 8  # problems per output shard (the unit of resume)

    # initial samples: vLLM ("vllm") or an OpenAI-compatible endpoint ("api")
    model: str = "tiny"  # local dir or hub id; "tiny" = build the tiny local Llama
    sampler: str = "vllm"
    sampler_api: TeacherConfig | None = None  # used when sampler == "api"
    api_actors: int = 1  # actors per API stage (each keeps max_concurrency requests in flight)
    # Rows per API batch; smaller = finer streaming. A batch whose every request fails
    # raises (the endpoint is down), which fails the run: it then resumes from the manifest.
    api_batch_size: int = 16
    engine: EngineSection = field(default_factory=EngineSection)
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(n=20, temperature=1.0, top_p=0.95,
                                               max_tokens=512))
    # sampling prompts of a model without a chat template (a base model): k shots from a
    # prompt split, never one of the synthesized problems (LeDex: 3-shot); k = 0: none
    few_shot: FewShotConfig = field(default_factory=FewShotConfig)

    # refinement: the model itself ("self", vLLM) or a teacher over HTTP ("teacher")
    refiner: str = "self"
    refine_model: str = ""  # "self" only; "" = the sampling model
    teacher: TeacherConfig | None = None  # used when refiner == "teacher"
    # Sampling and self-refinement with the same model share the `engine` pool (refine
    # requests first; refine_engine must then be left out). false, or another
    # refine_model: refinement gets its own ray.data.llm engines, set by refine_engine.
    share_engines: bool = True
    refine_engine: EngineSection = field(default_factory=EngineSection)
    refine_sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(temperature=0.8, top_p=0.95, max_tokens=1024))
    modes: list[str] = field(default_factory=lambda: ["explain_refine"])
    attempts: int = 10  # refinements per wrong sample and mode

    # execution: judging settings + the actor pool (actors per execution stage: samples,
    # refinements)
    sandbox: SandboxSection = field(default_factory=SandboxSection)

    # internal knobs
    map_cpus: float = 0.1  # Ray CPUs of the small map tasks (fractional: see DESIGN.md)
    staged: bool = False  # materialize between stages (benchmark baseline only)
    overwrite: bool = False  # wipe out_dir first instead of resuming
    # No progress (Ray Data tasks, finished problems) for this long fails the run with the
    # resources it waits for (selfdebug.progress); 0 = wait forever.
    stall_timeout_s: float = 1800.0
    fit_resources: bool = True  # scale actor CPUs to the cluster joined (selfdebug.resources)

    def validate(self) -> None:
        self.few_shot.validate()
        if self.sources and (self.source != DEFAULT_SOURCE or self.split != "train"
                             or self.limit is not None):
            raise ValueError("sources replaces source/split/limit (it would ignore them); "
                             "set either sources or source/split/limit")
        bad = sorted(set(self.modes) - set(MODES))
        if bad or not self.modes:
            raise ValueError(f"modes must be a non-empty subset of {list(MODES)}, got {self.modes}")
        if len(set(self.modes)) != len(self.modes):
            raise ValueError(f"modes has duplicates: {self.modes}")
        if self.sampler not in ("vllm", "api"):
            raise ValueError(f"sampler must be vllm|api, not {self.sampler!r}")
        if self.sampler == "api" and self.sampler_api is None:
            raise ValueError("sampler=api needs a sampler_api section (base_url, model, ...)")
        if self.refiner not in ("self", "teacher"):
            raise ValueError(f"refiner must be self|teacher, not {self.refiner!r}")
        if self.refiner == "teacher" and self.teacher is None:
            raise ValueError("refiner=teacher needs a teacher section (base_url, model, ...)")
        if self.refiner == "self" and self.sampler == "api" and not self.refine_model:
            raise ValueError("refiner=self with sampler=api needs refine_model (a vLLM model)")
        if self.sampling.n < 1 or self.attempts < 1 or self.shard_size < 1:
            raise ValueError("sampling.n, attempts and shard_size must be ≥ 1")
        # settings this run would carry but ignore
        if self.sampler != "api" and self.sampler_api is not None:
            raise ValueError(f"sampler_api is set but sampler is {self.sampler!r} (it would be "
                             "ignored); remove it or set sampler=api")
        if self.refiner != "teacher" and self.teacher is not None:
            raise ValueError(f"teacher is set but refiner is {self.refiner!r} (it would be "
                             "ignored); remove it or set refiner=teacher")
        if self.refiner == "teacher" and self.refine_model:
            raise ValueError("refine_model is for refiner=self; with refiner=teacher the "
                             "teacher section names the model")
        if self.sampler == "api" and self.engine != EngineSection():
            raise ValueError("engine is set but sampler is 'api' (no vLLM sampling engine; it "
                             "would be ignored); remove it or set sampler=vllm")
        if self.refine_engine != EngineSection() and (shares_engines(self)
                                                      or self.refiner == "teacher"):
            raise ValueError("refine_engine is set but refinement runs on the shared `engine` "
                             "pool (same model, share_engines=true) or the teacher (it would "
                             "be ignored); remove it or set share_engines=false")

    def problem_sources(self) -> list[SourceSpec]:
        """The sources this run reads, in order."""
        return list(self.sources) or [SourceSpec(self.source, self.split, self.limit)]

    def fingerprint(self) -> str:
        """Hash of the settings that decide the output rows (not limits or resources).

        Resuming into an out_dir written with another fingerprint would mix datasets.
        """
        keys = ("source", "split", "shard_size", "model", "sampler", "sampling", "refiner",
                "refine_model", "refine_sampling", "modes", "attempts", "seed")
        d = asdict(self)
        picked = {k: d[k] for k in keys}
        if self.sources:  # only when used: single-source runs keep their fingerprints
            picked["sources"] = d["sources"]
        if self.few_shot.k:  # likewise: the sampling prompts carry shots
            picked["few_shot"] = d["few_shot"]
        for k in ("sampler_api", "teacher"):
            section = d[k] or {}
            picked[k] = {f: section.get(f) for f in ("base_url", "model", "temperature",
                                                      "top_p", "max_tokens", "n", "seed")}
        blob = json.dumps(picked, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def shares_engines(cfg: SynthConfig) -> bool:
    """Sampling and refinement on one engine pool: both vLLM, same model."""
    return (cfg.share_engines and cfg.sampler == "vllm" and cfg.refiner == "self"
            and cfg.refine_model in ("", cfg.model))


def resolve_source(source: str) -> str:
    """A problem file path (absolute) or a dataset name, with a clear error if missing."""
    from selfdebug.problems.load import looks_like_file, missing_file_error, resolve_data_file

    if not looks_like_file(source):
        return source  # "humaneval", "hf:...", a Hugging Face name
    found = resolve_data_file(source)
    if found is None:
        raise missing_file_error(f"problem file {source!r} not found", source)
    return str(found)
