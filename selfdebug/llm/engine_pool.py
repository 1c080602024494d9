"""One pool of vLLM engines per model and run: Ray actors holding vLLM's `AsyncLLM`.

Two kinds of callers share the same engines:

- plain callers (a driver, an RL learner, a Serve replica): `EnginePool.generate` /
  `agenerate` take `GenerationRequest`s and return, per request, its n `Completion`s
  (text, generated token ids, prompt token ids, and per-token logprobs when asked);
- Ray Data: `EnginePool.ray_data_stage(sampling)` is a ``Dataset -> Dataset`` callable
  with fixed columns (in ``messages`` JSON or ``prompt``; out ``sample_index``,
  ``generated_text``, ``num_generated_tokens``, ``generation_error``).

Why one pool for several operators (and not `ray.data.llm` here): its processor gives
each operator its own engines, and a Ray Data graph has no cycles, so sampling and
self-refinement with the same model would need two pools. The refine pool then gets
requests only as fast as samples are judged: it idles at the start, the sample pool
idles at the end, and in between the refine engines run a few sequences per step where
the sample engines run full batches (the tiny CPU model spends 1.7x the CPU per token at
16 sequences per step as at 128). Here both operators send requests to the same engines,
so every step carries both kinds; refinement requests go first (vLLM priority
scheduling), which keeps the pipeline's tail short.

Chat messages are rendered in one place, inside the engine actor, with the engine's own
tokenizer (`prompts.render_prompt`): callers need neither transformers nor a tokenizer.

n samples of a request are n vLLM requests, each with its own seed derived from
(seed, rendered prompt, sample index) when a seed is given (`config.sample_seed`): results
are reproducible and independent of batching and of which replica served them.

Control surface (RL): `reload_weights` (in place, see `weights.py`), `sleep` / `wake_up`
(GPU only), `reset_prefix_cache`. On GPUs `reload_weights` takes the same path (a
staging directory read by vLLM's loader); vLLM's NCCL weight-transfer engine
(``init_weight_transfer_engine`` / ``update_weights``) is the faster path for large
models and would be wired as another `EngineActor` method next to `reload_weights`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from selfdebug.llm import weights
from selfdebug.llm.config import (
    EngineConfig,
    SamplingConfig,
    engine_env,
    engine_kwargs,
    sample_seed,
)
from selfdebug.llm.prompts import render_prompt, with_turn_stop

SAMPLE_PRIORITY, REFINE_PRIORITY = 1, 0  # vLLM: lower runs first
OUTPUT_COLUMNS = ("sample_index", "generated_text", "num_generated_tokens", "generation_error")


@dataclass
class GenerationRequest:
    messages: list[dict] | str | None = None  # chat messages (or their JSON), rendered by the engine
    prompt: str | None = None  # or an already rendered prompt
    sampling: dict = field(default_factory=dict)  # SamplingParams kwargs; n, seed: see module doc
    priority: int = 1  # vLLM priority scheduling, lower first
    logprobs: bool = False  # also return the sampled tokens' logprobs

    def num_samples(self) -> int:
        try:
            return max(1, int(self.sampling.get("n", 1)))
        except (TypeError, ValueError):
            return 1


@dataclass
class Completion:
    text: str
    token_ids: list[int]  # generated token ids
    logprobs: list[float] | None  # log p of each generated token (raw logits), when asked
    prompt_token_ids: list[int]
    finish_reason: str
    error: str = ""  # non-empty: this request failed (the others did not)


def _failed(reason: str) -> Completion:
    return Completion("", [], None, [], "error", error=reason[:2000])


class EngineActor:
    """An async Ray actor holding one vLLM engine (`AsyncLLM`)."""

    def __init__(self, engine: EngineConfig):
        import ray
        import vllm

        kwargs = {"scheduling_policy": "priority", **engine_kwargs(engine)}
        if not engine.resolved_cpu() and engine.tensor_parallel_size > 1:
            kwargs.setdefault("distributed_executor_backend", "ray")
        self.cpu = engine.resolved_cpu()
        self.engine = vllm.AsyncLLMEngine.from_engine_args(
            vllm.AsyncEngineArgs(model=engine.model, **kwargs))
        self.outstanding = 0
        self.ids = itertools.count()
        # The actor id survives a restart: a restarted replica reloads its last weights.
        self.staging = weights.staging_dir(ray.get_runtime_context().get_actor_id())
        self.restore = weights.last_loaded(self.staging)
        self.lock: asyncio.Lock | None = None

    async def _restored(self) -> None:
        if self.restore is None:
            return
        self.lock = self.lock or asyncio.Lock()
        async with self.lock:
            if self.restore is not None:
                await self._load(self.restore)
                self.restore = None

    async def ready(self) -> bool:
        await self._restored()
        return True

    def load(self) -> int:
        return self.outstanding

    async def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        """n completions per request; a failed request (a prompt longer than max_model_len,
        bad parameters, messages that do not render) does not fail the others."""
        await self._restored()
        self.outstanding += len(requests)
        try:
            return list(await asyncio.gather(*(self._request(r) for r in requests)))
        finally:
            self.outstanding -= len(requests)

    def _prompt(self, req: GenerationRequest) -> str:
        if req.messages is not None:
            messages = json.loads(req.messages) if isinstance(req.messages, str) else req.messages
            return render_prompt(self.engine.get_tokenizer(), messages)
        if not isinstance(req.prompt, str) or not req.prompt:
            raise ValueError("request has neither messages nor a prompt string")
        return req.prompt

    async def _request(self, req: GenerationRequest) -> list[Completion]:
        import vllm
        from vllm.sampling_params import RequestOutputKind

        try:
            prompt = self._prompt(req)
            # a model without a chat template (plain template) stops at its end-of-turn marker
            params = with_turn_stop(dict(req.sampling), self.engine.get_tokenizer())
            n, seed = int(params.pop("n", 1)), params.pop("seed", None)
            if n < 1:
                raise ValueError(f"sampling n must be ≥ 1, got {n}")
            # FINAL_ONLY: no RequestOutput per step and request (with hundreds of requests
            # in flight, waking each one up every step is a large share of a CPU engine).
            # logprobs=0: the sampled token's logprob only.
            samples = [vllm.SamplingParams(
                **params, n=1, seed=None if seed is None else sample_seed(int(seed), prompt, k),
                logprobs=0 if req.logprobs else None, output_kind=RequestOutputKind.FINAL_ONLY)
                for k in range(n)]
        except Exception as e:  # noqa: BLE001  one bad request: error rows, not a dead batch
            return [_failed(f"{type(e).__name__}: {e}")] * req.num_samples()
        return list(await asyncio.gather(*(self._one(prompt, s, req.priority) for s in samples)))

    async def _one(self, prompt: str, sampling, priority: int) -> Completion:
        try:
            final = None
            async for out in self.engine.generate(prompt, sampling, f"r{next(self.ids)}",
                                                  priority=priority):
                final = out
            c = final.outputs[0]
            logprobs = None
            if sampling.logprobs is not None:
                logprobs = [float(step[t].logprob) for t, step in zip(c.token_ids, c.logprobs)]
            return Completion(c.text, list(c.token_ids), logprobs,
                              list(final.prompt_token_ids or []), str(c.finish_reason or ""))
        except Exception as e:  # noqa: BLE001
            return _failed(f"{type(e).__name__}: {e}")

    # ------------------------------------------------------------------ control
    async def _load(self, source: str) -> None:
        # vLLM logs "RotaryEmbedding: Failed to load weights" at every reload: it counts
        # the layer's cos/sin cache, a buffer no checkpoint holds, as loadable, finds
        # nothing for it and puts the cache back (reload/layerwise.py) — harmless;
        # tests/test_engine_pool.py checks reloaded engines against transformers' greedy
        # tokens.
        await self.engine.collective_rpc("reload_weights", kwargs={"weights_path": source})
        # Cached prefixes hold KV computed with the old weights; running requests are
        # recomputed with the new ones.
        await self.engine.reset_prefix_cache(reset_running_requests=True)
        weights.mark_loaded(self.staging, source)

    async def reload_weights(self, state: dict | str) -> str:
        """Load ``state`` (HF-named tensors, or a checked weights directory) in place."""
        await self._restored()
        source = state if isinstance(state, str) else await asyncio.to_thread(
            weights.write_state, state, self.staging)
        await self._load(source)
        return source

    async def sleep(self, level: int = 1) -> None:
        if self.cpu:
            raise RuntimeError("EnginePool.sleep needs GPUs: vLLM has no sleep mode on CPU")
        await self.engine.sleep(level)

    async def wake_up(self) -> None:
        if self.cpu:
            raise RuntimeError("EnginePool.wake_up needs GPUs: vLLM has no sleep mode on CPU")
        await self.engine.wake_up()

    async def reset_prefix_cache(self) -> bool:
        return bool(await self.engine.reset_prefix_cache())

    def close(self) -> None:
        weights.remove(self.staging)


class EnginePool:
    """``engine.num_replicas`` engine actors for one model. Picklable (actor handles):
    pass it to Ray tasks, actors and Serve replicas; every copy uses the same engines."""

    def __init__(self, actors: list, engine: EngineConfig, name: str):
        self.actors, self.engine, self.name = actors, engine, name

    @classmethod
    def start(cls, engine: EngineConfig, *, name: str = "policy") -> EnginePool:
        """Start the engine actors; they load the model in the background (`wait_ready`)."""
        import ray

        options: dict[str, Any] = {
            "runtime_env": {"env_vars": engine_env(engine)},
            "max_concurrency": 1000,  # async actor: requests of many callers at once
            "max_restarts": 2,
            "max_task_retries": 1,
        }
        if engine.resolved_cpu():
            options["num_cpus"] = engine.num_cpus if engine.num_cpus is not None else 0.5
        else:
            # TP > 1: vLLM's Ray executor places one worker per GPU itself.
            options["num_gpus"] = (0 if engine.tensor_parallel_size > 1 else
                                   engine.num_gpus if engine.num_gpus is not None else 1)
            options["num_cpus"] = engine.num_cpus if engine.num_cpus is not None else 1
        actor = ray.remote(EngineActor).options(**options)
        return cls([actor.remote(engine) for _ in range(max(1, engine.num_replicas))],
                   engine, name)

    def _what(self) -> str:
        return f"engine pool {self.name!r} ({len(self.actors)} vLLM engine(s) of {self.engine.model})"

    def _all(self, method: str, *args, timeout_s: float = 600) -> list:
        import ray

        refs = [getattr(a, method).remote(*args) for a in self.actors]
        done, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        if pending:
            raise TimeoutError(f"{self._what()}: {len(pending)} engine(s) did not finish "
                               f"{method} within {timeout_s:.0f} s")
        return ray.get(refs)

    def wait_ready(self, timeout_s: float = 600) -> None:
        """Block until every engine has loaded its model; raises an engine's start error."""
        self._all("ready", timeout_s=timeout_s)

    # ------------------------------------------------------------------ generation
    async def _least_loaded(self) -> list[int]:
        loads = await asyncio.gather(*(a.load.remote() for a in self.actors),
                                     return_exceptions=True)
        live = [i for i, x in enumerate(loads) if isinstance(x, int)]
        return sorted(live, key=loads.__getitem__) or list(range(len(self.actors)))

    async def _run(self, chunk: list[GenerationRequest], first: int) -> list[list[Completion]]:
        """On replica ``first``. A replica that dies is restarted by Ray, which re-runs its
        calls; a chunk that fails on two engines becomes error completions."""
        import ray

        error: Exception | None = None
        pick = first
        for _ in range(2):
            try:
                return await self.actors[pick].generate.remote(chunk)
            except ray.exceptions.RayActorError as e:
                error = e
                pick = (await self._least_loaded())[0]
        reason = f"vLLM engine failed: {type(error).__name__}: {str(error)[:300]}"
        return [[_failed(reason)] * r.num_samples() for r in chunk]

    async def agenerate(self, requests: list[GenerationRequest], *,
                        timeout_s: float | None = None) -> list[list[Completion]]:
        """n completions per request, in order; spread over the least loaded replicas."""
        requests = list(requests)
        if not requests:
            return []
        order = await self._least_loaded()
        size = -(-len(requests) // len(order))
        chunks = [(requests[i:i + size], order[j]) for j, i in
                  enumerate(range(0, len(requests), size))]
        work = asyncio.gather(*(self._run(c, first) for c, first in chunks))
        try:
            parts = await asyncio.wait_for(work, timeout_s)
        except TimeoutError:
            raise TimeoutError(f"{self._what()}: {len(requests)} request(s) not done within "
                               f"{timeout_s} s") from None
        return [c for part in parts for c in part]

    def generate(self, requests: list[GenerationRequest], *,
                 timeout_s: float | None = None) -> list[list[Completion]]:
        """Blocking `agenerate`, for callers without an event loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.agenerate(requests, timeout_s=timeout_s))
        raise RuntimeError("EnginePool.generate called inside a running event loop: "
                           "await EnginePool.agenerate instead")

    # ------------------------------------------------------------------ control
    def reload_weights(self, state: dict | str | os.PathLike, *, timeout_s: float = 600) -> None:
        """New weights on every replica, in place: a dict of HF-named tensors (sent once
        through the object store) or a ``save_pretrained`` directory readable by every
        engine's node. Call it between generation phases."""
        import ray

        if isinstance(state, dict):
            source: Any = ray.put({k: v.detach().to("cpu") for k, v in state.items()})
        else:
            source = weights.check_weights_dir(state)
        self._all("reload_weights", source, timeout_s=timeout_s)

    def sleep(self, level: int = 1) -> None:
        self._all("sleep", level)

    def wake_up(self) -> None:
        self._all("wake_up")

    def reset_prefix_cache(self) -> None:
        self._all("reset_prefix_cache")

    def shutdown(self) -> None:
        import ray

        try:
            self._all("close", timeout_s=30)
        except Exception:  # noqa: BLE001  a dead engine has nothing to clean up
            pass
        for a in self.actors:
            ray.kill(a)

    # ------------------------------------------------------------------ Ray Data
    def ray_data_stage(self, sampling: SamplingConfig, *, priority: int = SAMPLE_PRIORITY,
                       num_cpus: float = 0.25) -> Callable:
        """A ``Dataset -> Dataset`` callable: ``sampling.n`` rows per input row, every input
        column kept, plus `OUTPUT_COLUMNS`. The request is the row's ``messages`` (chat
        messages as JSON, rendered by the engine) when it has that column, else its
        ``prompt`` (rendered). Rows that already have a ``sample_index`` column are refused
        (rename it first). ``num_cpus``: of the small client task (fractional: it only
        waits on the engines)."""
        import ray

        if sampling.n < 1:
            raise ValueError(f"sampling.n must be ≥ 1, got {sampling.n}")
        # Keep about max_concurrent_batches × batch_size requests in flight per engine,
        # whatever n is (the CPU cost per token falls with the sequences per step).
        rows = max(1, self.engine.batch_size // sampling.n)
        calls = max(1, round(self.engine.max_concurrent_batches * self.engine.batch_size
                             * len(self.actors) / (rows * sampling.n)))
        kwargs = {"pool": self, "sampling": sampling.request_params(), "priority": priority}

        def run(ds):
            return ds.map_batches(
                _StageClient, fn_constructor_kwargs=kwargs, batch_size=rows,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=1, max_tasks_in_flight_per_actor=calls,
                                                   max_concurrent_calls_per_actor=calls),
                num_cpus=num_cpus)

        return run


def request_from_row(row: dict, sampling: dict, priority: int) -> GenerationRequest:
    """A Ray Data row's request (see `EnginePool.ray_data_stage`)."""
    if "sample_index" in row:
        raise ValueError("input rows already have a 'sample_index' column (the generation "
                         "stage writes it): rename it before the stage")
    if row.get("messages") is not None:
        return GenerationRequest(messages=row["messages"], sampling=sampling, priority=priority)
    if isinstance(row.get("prompt"), str) and row["prompt"]:
        return GenerationRequest(prompt=row["prompt"], sampling=sampling, priority=priority)
    raise ValueError("row has neither a 'messages' column nor a rendered 'prompt' string; "
                     f"columns: {sorted(row)}")


def completion_rows(row: dict, completions: list[Completion]) -> list[dict]:
    """One output row per completion: ``row`` plus `OUTPUT_COLUMNS`."""
    return [{**row, "sample_index": k, "generated_text": "" if c.error else c.text,
             "num_generated_tokens": 0 if c.error else len(c.token_ids),
             "generation_error": c.error} for k, c in enumerate(completions)]


class _StageClient:
    """Ray Data UDF: a batch of rows → requests to the pool → n rows each."""

    def __init__(self, pool: EnginePool, sampling: dict, priority: int):
        self.pool, self.sampling, self.priority = pool, sampling, priority
        self.checked = False

    async def __call__(self, batch):
        import pyarrow as pa

        if not self.checked:  # an engine that cannot start fails the run with its reason
            await asyncio.gather(*(a.ready.remote() for a in self.pool.actors))
            self.checked = True
        rows = batch.to_pylist()
        requests = [request_from_row(r, self.sampling, self.priority) for r in rows]
        results = await self.pool.agenerate(requests)
        yield pa.Table.from_pylist([out for r, c in zip(rows, results)
                                    for out in completion_rows(r, c)])
