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
        self.seconds = 0.0  # generating

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
        t0 = time.time()
        done = self.pool.generate([
            GenerationRequest(messages=m, sampling={
                "n": 1, "temperature": sampling.temperature, "top_p": sampling.top_p,
                "max_tokens": sampling.max_tokens, "seed": request_seed(sampling.seed, k)})
            for m, k in zip(requests, keys)], timeout_s=3600)
        errors = [c[0].error for c in done if c[0].error]
        if errors and len(errors) == len(done):
            raise RuntimeError(f"every generation request failed, e.g.: {errors[0]}")
        self.tokens += sum(len(c[0].token_ids) for c in done)
        self.seconds += time.time() - t0
        return [c[0].text for c in done]

    def shutdown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None


class Sandbox:
    """The sandbox actor pool holding every problem of the run; each distinct program runs
    once per run.

    A verdict depends only on the program and its problem's tests (up to a program racing
    its time limit), and a 0.63 M-parameter model repeats itself: of seed 0's 5,400
    held-out samples only 2,230 are distinct (task, code) pairs.
    """

    def __init__(self, problems: list, section):
        """``section``: the job's `config.SandboxSection`."""
        from selfdebug.sandbox.actor_pool import SandboxActorPool

        self.pool = SandboxActorPool({p.task_id: p for p in problems}, section.judge_config(),
                                     chunk_size=64, **section.pool_kwargs())
        self.isolation = self.pool.isolation
        self.verdicts: dict[tuple[str, str], dict] = {}
        self.judged = 0  # programs asked for; ``executions``: those the sandbox ran
        self.seconds = 0.0  # judging

    @property
    def executions(self) -> int:
        return len(self.verdicts)

    def judge(self, rows: list[tuple[str, str]]) -> list[dict]:
        """Verdict dicts (status, passed, total, feedback, ...) for (task_id, code) rows;
        a program judged before gets the same (shared, read-only) dict."""
        t0 = time.time()
        new = [r for r in dict.fromkeys(rows) if r not in self.verdicts]
        out = self.pool.judge_all([{"task_id": t, "code": c} for t, c in new])
        self.verdicts.update(zip(new, out))
        self.judged += len(rows)
        self.seconds += time.time() - t0
        return [self.verdicts[r] for r in rows]

    def shutdown(self) -> None:
        self.pool.shutdown()
