"""Batch generation inside Ray Data with `ray.data.llm` (its own vLLM engines per operator).

The tool for a *separate* batch model (a refine model other than the sampling one, or
``share_engines: false``): the engines live and die with the operator. Everything else
(one model for several operators, plain callers, RL, Serve) uses `engine_pool.EnginePool`.
Same row contract as `EnginePool.ray_data_stage`: in ``messages`` (JSON; rendered here
with the model's tokenizer, loaded once by a one-actor pool) or ``prompt`` (rendered);
out ``sample_index``, ``generated_text``, ``num_generated_tokens``, ``generation_error``,
every input column kept.

How n > 1 samples work: the `ray.data.llm` vLLM stage keeps only ``outputs[0]`` of each
request, so ``SamplingParams(n=...)`` cannot be used. Each input row is replicated n times
before the engine, each with its own seed derived from (seed, rendered prompt, index), as
in the engine pool: seeded results do not depend on row order, batching or back-end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from selfdebug.llm.config import (  # noqa: F401  (re-exported: the old import path)
    EngineConfig,
    EngineSection,
    SamplingConfig,
    engine_env,
    engine_kwargs,
    sample_seed,
)
from selfdebug.llm.engine_pool import OUTPUT_COLUMNS, request_from_row
from selfdebug.llm.prompts import render_prompt

# Columns the ray.data.llm stages read or write inside a row. Input columns with these
# names are stashed away before the processor and restored after it (a "model" column
# would otherwise be taken as a LoRA adapter name, "prompt" would be overwritten, ...).
_RESERVED = frozenset({
    "prompt", "sampling_params", "tokenized_prompt", "model", "multimodal_data",
    "mm_processor_kwargs", "multimodal_uuids", "tokenization_kwargs", "pooling_params",
    "messages", "prompt_token_ids", "num_input_tokens", "generated_tokens",
    "generated_text", "num_generated_tokens", "embeddings", "metrics", "logprobs",
    "prompt_logprobs", "request_id", "batch_uuid", "time_taken_llm", "params",
    "__inference_error__", "__idx_in_batch",
})
_STASH = "__sd_stash__"
_COLS = "__sd_cols"
_ERROR = "__sd_error"


def processor_config(engine: EngineConfig):
    """The `vLLMEngineProcessorConfig` for ``engine``."""
    from ray.data.llm import vLLMEngineProcessorConfig

    cpu = engine.resolved_cpu()
    extra: dict[str, Any] = {}
    if cpu:
        # Without a placement group config the engine stage asks for one GPU per worker.
        cpus = engine.num_cpus if engine.num_cpus is not None else 0.5
        extra["placement_group_config"] = {
            "bundles": [{"CPU": cpus} for _ in range(engine.tensor_parallel_size)]
        }
    elif engine.num_cpus is not None:
        extra["placement_group_config"] = {
            "bundles": [{"CPU": engine.num_cpus, "GPU": 1}
                        for _ in range(engine.tensor_parallel_size)]
        }
    return vLLMEngineProcessorConfig(
        model_source=engine.model,
        engine_kwargs=engine_kwargs(engine),
        runtime_env={"env_vars": engine_env(engine)},
        concurrency=engine.num_replicas,
        batch_size=engine.batch_size,
        max_concurrent_batches=engine.max_concurrent_batches,
        # Prompts arrive rendered; vLLM tokenizes and detokenizes itself, which saves two
        # tokenizer actor pools (more actors to schedule and start on a small node).
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,
        # One bad row (e.g. a prompt longer than max_model_len) must not kill a long run:
        # it comes out with empty text and the error in `generation_error`.
        should_continue_on_error=True,
        log_engine_metrics=False,
        **extra,
    )


class ExpandRows:
    """``flat_map`` (one-actor pool): a row → n engine requests, the row's own columns
    stashed where ray.data.llm would read or overwrite them. Messages are rendered with
    the model's tokenizer, loaded on the first row that needs it."""

    def __init__(self, model: str, sampling: SamplingConfig):
        self.model, self.sampling, self.tokenizer = model, sampling, None

    def _render(self, messages) -> str:
        import json

        if self.tokenizer is None:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(self.model)
        messages = json.loads(messages) if isinstance(messages, str) else messages
        return render_prompt(self.tokenizer, messages)

    def __call__(self, row: dict) -> list[dict]:
        request = request_from_row(row, {}, 0)  # the checks and the messages-or-prompt rule
        base = {(_STASH + k if k in _RESERVED else k): v for k, v in row.items()}
        base[_COLS] = list(row)
        try:
            prompt = self._render(request.messages) if request.messages is not None \
                else request.prompt
        except Exception as e:  # noqa: BLE001  a row that does not render: error rows
            # Through the engine as a one-token request (a branch around it would make
            # Ray Data run everything upstream twice); finalize_row reports the error.
            error = f"{type(e).__name__}: {e}"[:2000]
            return [{**base, "sample_index": k, "prompt": "\n", _ERROR: error,
                     "sampling_params": {**self.sampling.params("", k), "max_tokens": 1}}
                    for k in range(self.sampling.n)]
        return [{**base, "sample_index": k, "prompt": prompt, _ERROR: "",
                 "sampling_params": self.sampling.params(prompt, k)}
                for k in range(self.sampling.n)]


def finalize_row(row: dict) -> dict:
    """An engine result → the input row's columns plus `OUTPUT_COLUMNS`."""
    out = {c: row[_STASH + c] if _STASH + c in row else row.get(c) for c in row[_COLS]}
    error = row.get(_ERROR) or row.get("__inference_error__") or ""
    out["sample_index"] = int(row["sample_index"])
    out["generated_text"] = "" if error else (row.get("generated_text") or "")
    out["num_generated_tokens"] = 0 if error else int(row.get("num_generated_tokens") or 0)
    out["generation_error"] = str(error)
    assert set(OUTPUT_COLUMNS) <= set(out)
    return out


def batch_stage(engine: EngineConfig, sampling: SamplingConfig, *,
                num_cpus: float = 0.25) -> Callable:
    """A ``Dataset -> Dataset`` callable: n samples per row from a ray.data.llm engine pool
    started for this operator (see the module docstring). Lazy: nothing runs until the
    dataset is consumed."""
    import ray
    from ray.data.llm import build_processor

    if sampling.n < 1:
        raise ValueError(f"sampling.n must be ≥ 1, got {sampling.n}")
    # Small tasks around the engine: fractional CPUs so they never wait for the CPUs that
    # the engine actors and sandbox pool hold (a 2-CPU node deadlocks otherwise).
    small = {"num_cpus": num_cpus}
    processor = build_processor(processor_config(engine), preprocess_map_kwargs=small,
                                postprocess_map_kwargs=small)

    def run(ds):
        ds = ds.flat_map(ExpandRows, fn_constructor_kwargs={"model": engine.model,
                                                            "sampling": sampling},
                         compute=ray.data.ActorPoolStrategy(size=1), **small)
        return processor(ds).map(finalize_row, **small)

    return run
