"""One pool of vLLM engines shared by several Ray Data operators.

Why not `ray.data.llm` here: its processor gives each operator its own engine pool, and
a Ray Data graph has no cycles, so sampling and self-refinement with the same model need
two pools. The refine pool then gets its requests only as fast as samples are judged:
it idles at the start, the sample pool idles at the end, and in between the refine
engines run with a few sequences per step where the sample engines run full batches
(the tiny CPU model spends 1.7x the CPU per token at 16 sequences per step as at 128).
Here both operators send requests to the same engines, so every step carries both
kinds; refinement requests go first (vLLM's priority scheduling), which keeps the
pipeline's tail short.

The request and result columns are those of `ray.data.llm` (``prompt``,
``sampling_params`` in; ``generated_text``, ``num_generated_tokens``,
``__inference_error__`` out), so `generate.build_generator`'s row expansion and
finalisation apply unchanged.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from typing import Any

from selfdebug.llm.generate import (
    EngineConfig,
    SamplingConfig,
    _expand,
    _finalize,
    engine_env,
    engine_kwargs,
)
from selfdebug.llm.prompts import render_prompt, with_turn_stop

SAMPLE_PRIORITY, REFINE_PRIORITY = 1, 0  # vLLM: lower runs first


class EngineActor:
    """An async Ray actor holding one vLLM engine (`AsyncLLM`)."""

    def __init__(self, engine: EngineConfig):
        import vllm

        kwargs = {"scheduling_policy": "priority", **engine_kwargs(engine)}
        if not engine.resolved_cpu() and engine.tensor_parallel_size > 1:
            kwargs.setdefault("distributed_executor_backend", "ray")
        self.engine = vllm.AsyncLLMEngine.from_engine_args(
            vllm.AsyncEngineArgs(model=engine.model, **kwargs))
        self.outstanding = 0
        self.ids = itertools.count()

    def ready(self) -> bool:
        return True

    def load(self) -> int:
        return self.outstanding

    async def generate(self, prompts: list[str], params: list[dict], priority: int,
                       chat: bool = False) -> list[tuple[str, int, str]]:
        """(text, generated tokens, error) per prompt; a failed request (a prompt longer
        than max_model_len, bad parameters, messages that do not render) does not fail the
        others. ``chat``: prompts are messages as JSON, rendered here with the engine's
        own tokenizer (callers then need neither transformers nor a tokenizer)."""
        self.outstanding += len(prompts)
        try:
            return list(await asyncio.gather(*(self._one(p, sp, priority, chat)
                                               for p, sp in zip(prompts, params))))
        finally:
            self.outstanding -= len(prompts)

    async def _one(self, prompt: str, params: dict, priority: int,
                   chat: bool) -> tuple[str, int, str]:
        import vllm
        from vllm.sampling_params import RequestOutputKind

        try:
            tokenizer = self.engine.get_tokenizer()
            if chat:
                prompt = render_prompt(tokenizer, json.loads(prompt))
            # a model without a chat template (plain template) stops at its end-of-turn marker
            params = with_turn_stop(params, tokenizer)
            # FINAL_ONLY: no RequestOutput per step and request (with hundreds of requests
            # in flight, waking each one up every step is a large share of a CPU engine).
            sampling = vllm.SamplingParams(**params, output_kind=RequestOutputKind.FINAL_ONLY)
            final = None
            async for out in self.engine.generate(prompt, sampling, f"r{next(self.ids)}",
                                                  priority=priority):
                final = out
            completion = final.outputs[0]
            return completion.text, len(completion.token_ids), ""
        except Exception as e:  # noqa: BLE001  one bad request: an error row, not a dead batch
            return "", 0, f"{type(e).__name__}: {e}"[:2000]


def start_engines(engine: EngineConfig) -> list:
    """``engine.num_replicas`` engine actors; they load the model in the background."""
    import ray

    cpu = engine.resolved_cpu()
    options: dict[str, Any] = {
        "runtime_env": {"env_vars": engine_env(engine)},
        "max_concurrency": 1000,  # async actor: requests of many batches at once
        "max_restarts": 2,
        "max_task_retries": 1,
    }
    if cpu:
        options["num_cpus"] = engine.num_cpus if engine.num_cpus is not None else 0.5
    else:
        # TP > 1: vLLM's Ray executor places one worker per GPU itself.
        options["num_gpus"] = 1 if engine.tensor_parallel_size == 1 else 0
        options["num_cpus"] = engine.num_cpus if engine.num_cpus is not None else 1
    actor = ray.remote(EngineActor).options(**options)
    return [actor.remote(engine) for _ in range(max(1, engine.num_replicas))]


class _EngineClient:
    """Ray Data UDF: sends each batch to the least loaded engine of the pool."""

    def __init__(self, engines: list, priority: int, chat: bool):
        self.engines, self.priority, self.chat = engines, priority, chat
        self.checked = False

    async def __call__(self, batch):
        import pyarrow as pa

        if not self.checked:  # an engine that cannot start fails the run with its reason
            await asyncio.gather(*(e.ready.remote() for e in self.engines))
            self.checked = True
        rows = batch.to_pylist()
        prompts = [r["prompt"] for r in rows]
        params = [{k: v for k, v in r["sampling_params"].items() if v is not None}
                  for r in rows]
        results = await self._generate(prompts, params)
        for r, (text, tokens, error) in zip(rows, results):
            del r["prompt"], r["sampling_params"]
            r.update(generated_text=text, num_generated_tokens=tokens,
                     __inference_error__=error)
        yield pa.Table.from_pylist(rows)

    async def _generate(self, prompts: list[str], params: list[dict]) -> list:
        """On the least loaded engine. An engine that dies is restarted by Ray, which
        re-runs its calls; a batch that fails on two engines becomes error rows."""
        import ray

        error = None
        for _ in range(2):
            try:
                loads = await asyncio.gather(*(e.load.remote() for e in self.engines),
                                             return_exceptions=True)
                live = [i for i, x in enumerate(loads) if isinstance(x, int)]
                pick = min(live, key=loads.__getitem__) if live else 0
                return await self.engines[pick].generate.remote(prompts, params, self.priority,
                                                                self.chat)
            except ray.exceptions.RayActorError as e:
                error = e
        reason = f"vLLM engine failed: {type(error).__name__}: {str(error)[:300]}"
        return [("", 0, reason)] * len(prompts)


def build_pool_generator(
    engines: list,
    engine: EngineConfig,
    sampling: SamplingConfig,
    *,
    priority: int,
    chat: bool = False,
    num_cpus: float = 0.25,
    prompt_column: str,
    output_column: str,
    sample_column: str,
    tokens_column: str,
    error_column: str,
) -> Callable:
    """Like `generate.build_generator`, on a shared engine pool. ``chat``: the prompt
    column holds messages as JSON (`llm.prompts`), rendered by the engines. ``num_cpus``:
    of the small tasks around the engines (equal to their neighbours' lets Ray Data fuse
    them)."""
    import ray

    if sampling.n < 1:
        raise ValueError(f"sampling.n must be ≥ 1, got {sampling.n}")
    small = {"num_cpus": num_cpus}
    in_flight = engine.max_concurrent_batches * max(1, engine.num_replicas)

    def run(ds):
        ds = ds.flat_map(_expand, fn_kwargs=dict(prompt_column=prompt_column,
                                                 sample_column=sample_column,
                                                 sampling=sampling), **small)
        ds = ds.map_batches(
            _EngineClient,
            fn_constructor_kwargs={"engines": engines, "priority": priority, "chat": chat},
            batch_size=engine.batch_size, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=1, max_tasks_in_flight_per_actor=in_flight,
                                               max_concurrent_calls_per_actor=in_flight),
            num_cpus=0.05)
        return ds.map(_finalize, fn_kwargs=dict(
            sample_column=sample_column, output_column=output_column,
            tokens_column=tokens_column, error_column=error_column), **small)

    return run
