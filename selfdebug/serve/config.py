"""`selfdebug serve` config: the model deployment, the sandbox deployment, /v1/debug limits,
HTTP and auth. Loaded from YAML by `selfdebug.config.load_config` (key=value overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field

from selfdebug.config import SandboxSection
from selfdebug.llm.config import EngineSection


@dataclass
class Autoscaling:
    """Ray Serve autoscaling of one deployment (min == max: a fixed number of replicas)."""

    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 8.0
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 60.0

    def options(self) -> dict:
        return {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
                "upscale_delay_s": self.upscale_delay_s,
                "downscale_delay_s": self.downscale_delay_s}

    def check(self, where: str) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError(f"{where}: need 0 <= min_replicas <= max_replicas, max >= 1 "
                             f"(got {self.min_replicas}, {self.max_replicas})")
        if self.target_ongoing_requests <= 0:
            raise ValueError(f"{where}.target_ongoing_requests must be > 0")


@dataclass
class ModelSection:
    path: str = "tiny"  # an exported checkpoint dir (save_pretrained), a hub name, or "tiny"
    model_id: str = "selfdebug"  # the name clients pass as `model`
    engine: EngineSection = field(default_factory=EngineSection)
    autoscaling: Autoscaling = field(default_factory=Autoscaling)
    max_ongoing_requests: int = 64  # per replica; vLLM batches what is in flight
    # Rolling update (new checkpoint): extra replicas allowed while old ones still serve, in
    # % of the target. 100: every new replica is up before an old one stops (needs room for
    # them: on a single GPU use 0 — old stops first, requests wait for the new one).
    surge_percent: int = 100
    accelerator_type: str = ""  # GPU type for Ray scheduling (e.g. "A10G"); "" = any
    # Ray CPUs of the replica process itself (the engine's bundle is engine.num_cpus).
    replica_cpus: float = 0.5


@dataclass
class ServeSandboxSection(SandboxSection):
    """The common ``sandbox:`` section; ``actors`` replicas at start, autoscaling up to
    ``max_actors`` (each replica holds ``workers_per_actor`` fork servers)."""

    max_actors: int = 1
    target_ongoing_requests: float = 4.0

    def validate(self) -> None:
        super().validate()
        if self.max_actors < self.actors:
            raise ValueError(f"sandbox.max_actors ({self.max_actors}) < sandbox.actors "
                             f"({self.actors})")


@dataclass
class DebugLimits:
    """Request limits of /v1/debug (4xx beyond them) and its defaults."""

    max_body_bytes: int = 1 << 20  # every endpoint: larger bodies get 413
    max_code_chars: int = 20_000
    max_problem_chars: int = 20_000
    max_error_chars: int = 8_000
    max_tests: int = 100
    max_test_chars: int = 4_000  # one assert line / one stdin or stdout / one JSON argument list
    max_rounds: int = 5
    default_rounds: int = 3
    max_tokens: int = 512  # per model call
    temperature: float = 0.0  # greedy by default: a debugger's answer should be reproducible
    request_timeout_s: float = 300.0  # whole /v1/debug request; what finished is returned
    model_timeout_s: float = 120.0  # one model call
    sandbox_timeout_s: float = 120.0  # one sandbox call


@dataclass
class ServeConfig:
    name: str = "selfdebug"  # the Serve application name (in-place updates keep it)
    out_dir: str = "runs/serve"  # config.json + metadata.json of this service run
    host: str = "127.0.0.1"
    port: int = 8000
    route_prefix: str = "/"
    address: str = ""  # Ray cluster to join; "" = RAY_ADDRESS or a new local one
    num_cpus: int = 0  # local cluster's logical CPUs (0: max(4, cores), DESIGN.md)
    # Optional API key: read by the ingress replicas from this env var or file; when
    # neither is set every request is accepted.
    api_key_env: str = "SELFDEBUG_API_KEY"
    api_key_file: str = ""
    log_encoding: str = "JSON"  # Ray Serve structured logs (JSON | TEXT)
    model: ModelSection = field(default_factory=ModelSection)
    sandbox: ServeSandboxSection = field(default_factory=ServeSandboxSection)
    debug: DebugLimits = field(default_factory=DebugLimits)
    ingress: Autoscaling = field(default_factory=lambda: Autoscaling(
        min_replicas=1, max_replicas=1, target_ongoing_requests=32.0))
    ingress_cpus: float = 0.25

    def validate(self) -> None:
        if not self.model.path:
            raise ValueError("model.path: needs an exported checkpoint dir, a hub name or 'tiny'")
        if not self.model.model_id:
            raise ValueError("model.model_id must not be empty")
        self.model.autoscaling.check("model.autoscaling")
        if not 0 <= self.model.surge_percent <= 100:
            raise ValueError("model.surge_percent must be in 0..100")
        self.ingress.check("ingress")
        self.sandbox.validate()
        d = self.debug
        if not 1 <= d.default_rounds <= d.max_rounds:
            raise ValueError("debug: need 1 <= default_rounds <= max_rounds")
        for k in ("max_body_bytes", "max_code_chars", "max_tests", "max_test_chars",
                  "max_tokens"):
            if getattr(d, k) <= 0:
                raise ValueError(f"debug.{k} must be > 0")
        if self.log_encoding not in ("JSON", "TEXT"):
            raise ValueError("log_encoding: JSON or TEXT")
