"""The demo's model and sandbox handles: one vLLM engine pool and one sandbox actor pool,
kept alive for the whole run, with each round's weights loaded into the engines in place
(`EnginePool.reload_weights`).

Generation requests are chat messages (rendered by the engines with the model's own
tokenizer, as `llm.prompts` renders them everywhere), each with its own seed derived from
a key naming the request, so a run is reproducible request by request.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from selfdebug.llm.config import EngineConfig


@dataclass
class Sampling:
    temperature: float
    top_p: float
    max_tokens: int
    seed: int


def request_seed(seed: int, key: str) -> int:
    return zlib.crc32(f"{seed}\x00{key}".encode()) & 0x7FFFFFFF


class Engines:
    """The engine pool serving the current model; `load` swaps the weights in."""

    def __init__(self, engine: EngineConfig, log: Callable[[str], None] = print):
        self.config, self.log = engine, log
        self.pool = None
        self.model = ""
        self.load_seconds: list[float] = []
        self.tokens = 0

    def load(self, model_dir: str) -> None:
        """Serve ``model_dir`` from now on: the first call starts the engines, later ones
        load the new weights into them in place (same tokenizer and architecture)."""
        from selfdebug.llm.engine_pool import EnginePool

        if model_dir == self.model:
            return
        t0 = time.time()
        if self.pool is None:
            self.pool = EnginePool.start(self.config, name="demo")
            self.pool.wait_ready(timeout_s=600)
        if model_dir != self.config.model:
            self.pool.reload_weights(model_dir)
            self.pool.reset_prefix_cache()  # cached KV blocks belong to the old weights
        self.model = model_dir
        self.load_seconds.append(time.time() - t0)
        self.log(f"engines: serving {model_dir} ({self.load_seconds[-1]:.1f} s)")

    def generate(self, requests: list[list[dict]], sampling: Sampling,
                 keys: list[str]) -> list[str]:
        """One completion per request (chat messages); ``keys`` seed each request."""
        from selfdebug.llm.engine_pool import GenerationRequest

        if not requests:
            return []
        done = self.pool.generate([
            GenerationRequest(messages=m, sampling={
                "n": 1, "temperature": sampling.temperature, "top_p": sampling.top_p,
                "max_tokens": sampling.max_tokens, "seed": request_seed(sampling.seed, k)})
            for m, k in zip(requests, keys)], timeout_s=3600)
        errors = [c[0].error for c in done if c[0].error]
        if errors and len(errors) == len(done):
            raise RuntimeError(f"every generation request failed, e.g.: {errors[0]}")
        self.tokens += sum(len(c[0].token_ids) for c in done)
        return [c[0].text for c in done]

    def shutdown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None


class Sandbox:
    """The sandbox actor pool holding every problem of the run."""

    def __init__(self, problems: list, section):
        """``section``: the job's `config.SandboxSection`."""
        from selfdebug.sandbox.actor_pool import SandboxActorPool

        self.pool = SandboxActorPool({p.task_id: p for p in problems}, section.judge_config(),
                                     chunk_size=64, **section.pool_kwargs())
        self.isolation = self.pool.isolation
        self.executions = 0

    def judge(self, rows: list[tuple[str, str]]) -> list[dict]:
        """Verdict dicts (status, passed, total, feedback, ...) for (task_id, code) rows."""
        out = self.pool.judge_all([{"task_id": t, "code": c} for t, c in rows])
        self.executions += len(out)
        return out

    def shutdown(self) -> None:
        self.pool.shutdown()
