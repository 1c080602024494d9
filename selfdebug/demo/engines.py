"""The demo's model and sandbox handles: one vLLM engine pool and one sandbox actor, kept
alive for the whole run, with each round's weights loaded into the engines.

Generation requests are chat messages (rendered by the engines with the model's own
tokenizer, as `llm.prompts` renders them everywhere) with per-request seeds
(`generate.sample_seed`), so a run is reproducible request by request.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from selfdebug.llm import engine_pool as _engine_pool
from selfdebug.llm.generate import EngineConfig, sample_seed

# The engine layer's pool with in-place weight reload (INTERFACES.md §1), once on main.
_HAS_POOL = hasattr(_engine_pool, "EnginePool")


@dataclass
class Sampling:
    temperature: float
    top_p: float
    max_tokens: int
    seed: int


class Engines:
    """vLLM engines for the current model; `load` swaps the weights in."""

    def __init__(self, engine: EngineConfig, log: Callable[[str], None] = print):
        self.config, self.log = engine, log
        self.actors: list = []
        self.pool = None
        self.model = ""
        self.load_seconds: list[float] = []
        self.tokens = 0

    def load(self, model_dir: str) -> None:
        """Serve ``model_dir`` from now on: the first call starts the engines, later ones
        load the new weights into them in place (same tokenizer and architecture)."""
        if model_dir == self.model:
            return
        t0 = time.time()
        if _HAS_POOL:
            from selfdebug.llm.engine_pool import EnginePool

            if self.pool is None:
                cfg = EngineConfig(**{**self.config.__dict__, "model": model_dir})
                self.pool = EnginePool.start(cfg, name="demo")
                self.pool.wait_ready(timeout_s=600)
            else:
                self.pool.reload_weights(model_dir)
                self.pool.reset_prefix_cache()
        else:
            self._restart(model_dir)
        self.model = model_dir
        self.load_seconds.append(time.time() - t0)
        self.log(f"engines: serving {model_dir} ({self.load_seconds[-1]:.1f} s)")

    def _restart(self, model_dir: str) -> None:
        # Until the engine layer's in-place reload is on main: new engines on the new dir.
        import ray

        from selfdebug.llm.engine_pool import start_engines

        for a in self.actors:
            ray.kill(a)
        cfg = EngineConfig(**{**self.config.__dict__, "model": model_dir})
        self.actors = start_engines(cfg)
        ray.get([a.ready.remote() for a in self.actors], timeout=600)

    def generate(self, requests: list[list[dict]], sampling: Sampling,
                 keys: list[str]) -> list[str]:
        """One completion per request (chat messages); ``keys`` seed each request."""
        import ray

        if not requests:
            return []
        params = [{"n": 1, "temperature": sampling.temperature, "top_p": sampling.top_p,
                   "max_tokens": sampling.max_tokens,
                   "seed": sample_seed(sampling.seed, k, 0)} for k in keys]
        if _HAS_POOL:
            from selfdebug.llm.engine_pool import GenerationRequest

            done = self.pool.generate([GenerationRequest(messages=m, sampling=p)
                                       for m, p in zip(requests, params)], timeout_s=3600)
            out = [(c[0].text, len(c[0].token_ids), c[0].error) for c in done]
        else:
            prompts = [json.dumps(m) for m in requests]
            chunk = max(1, -(-len(prompts) // len(self.actors)))
            refs = [a.generate.remote(prompts[i:i + chunk], params[i:i + chunk], 1, True)
                    for a, i in zip(self.actors, range(0, len(prompts), chunk))]
            out = [x for part in ray.get(refs, timeout=3600) for x in part]
        errors = [e for _, _, e in out if e]
        if errors and len(errors) == len(out):
            raise RuntimeError(f"every generation request failed, e.g.: {errors[0]}")
        self.tokens += sum(n for _, n, _ in out)
        return [t for t, _, _ in out]

    def shutdown(self) -> None:
        import ray

        if self.pool is not None:
            self.pool.shutdown()
        for a in self.actors:
            ray.kill(a)
        self.actors, self.pool = [], None


class Sandbox:
    """One sandbox actor (fork servers) holding every problem of the run."""

    def __init__(self, problems: list, config, workers: int):
        import ray

        from selfdebug.sandbox.actor import SandboxActor

        self.actor = ray.remote(SandboxActor).options(num_cpus=0.5, max_restarts=2).remote(
            ray.put({p.task_id: p for p in problems}), config, workers)
        self.isolation = ray.get(self.actor.ready.remote(), timeout=120)
        self.executions = 0

    def judge(self, rows: list[tuple[str, str]], chunk: int = 256) -> list[dict]:
        """Verdict dicts (status, passed, total, feedback, ...) for (task_id, code) rows."""
        import ray

        refs = [self.actor.run_rows.remote(rows[i:i + chunk]) for i in range(0, len(rows), chunk)]
        out = [v for part in ray.get(refs, timeout=3600) for v in part]
        self.executions += len(out)
        return out

    def shutdown(self) -> None:
        import ray

        ray.kill(self.actor)
