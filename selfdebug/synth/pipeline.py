"""The synthesis pipeline: one lazy, streaming Ray Data dataset.

    problems → render → sample (vLLM | API) → extract → dedupe (ledger) → execute
      → record samples (ledger) → refine requests (wrong ones × modes) → generate K
      attempts (vLLM self | teacher) → extract → execute → debug records (ledger)

Every step is a Ray Data operator chained lazily, so the streaming executor runs the
engine pools and the sandbox pools at once and moves rows between them as they are
ready. The two per-problem steps (dedupe, shard assembly) go through the ledger actor
(see ledger.py) instead of a groupby, which would be a barrier over the whole dataset.

Engines: when sampling and self-refinement use the same model they share one pool of
``engine.num_replicas`` engines (`llm.engine_pool`: ray.data.llm binds a pool to one
operator, and a graph has no cycles); otherwise each operator gets its own
`ray.data.llm` pool.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace

import selfdebug
from selfdebug.synth import rows as R
from selfdebug.synth import shards as S
from selfdebug.synth.config import SynthConfig, resolve_model, resolve_source


def load_plan(cfg: SynthConfig):
    """(problems by task id, shard plan) in load order."""
    from selfdebug.problems import load_problems

    problems = load_problems(resolve_source(cfg.source), split=cfg.split or None,
                             limit=cfg.limit)
    if not problems:
        raise ValueError(f"no problems in {cfg.source!r} (split={cfg.split!r})")
    by_id = {p.task_id: p for p in problems}
    if len(by_id) != len(problems):
        raise ValueError(f"{cfg.source}: duplicate task ids")
    return by_id, S.plan_shards(list(by_id), cfg.shard_size)


def _sampling(s, seed: int, n: int | None = None):
    return replace(s, seed=seed if s.seed is None else s.seed, n=n or s.n)


def model_names(cfg: SynthConfig) -> tuple[str, str]:
    """(sample_model, refine_model) as written in every record."""
    sample = cfg.sampler_api.model if cfg.sampler == "api" else cfg.model
    if cfg.sampler == "api":
        sample = f"api:{sample}@{cfg.sampler_api.base_url}"
    if cfg.refiner == "teacher":
        refine = f"teacher:{cfg.teacher.model}@{cfg.teacher.base_url}"
    else:
        refine = cfg.refine_model or cfg.model
    return sample, refine


def sampling_params_json(cfg: SynthConfig) -> str:
    """The sampling settings of both generations, as stored in each debug record."""
    sample = (asdict(replace(cfg.sampler_api, n=cfg.sampling.n)) if cfg.sampler == "api"
              else asdict(_sampling(cfg.sampling, cfg.seed)))
    refine = (asdict(replace(cfg.teacher, n=cfg.attempts)) if cfg.refiner == "teacher"
              else asdict(_sampling(cfg.refine_sampling, cfg.seed + 1, cfg.attempts)))
    for d in (sample, refine):  # endpoint secrets never live in the config, but be sure
        d.pop("api_key_env", None)
    return json.dumps({"sample": sample, "refine": refine, "modes": cfg.modes}, sort_keys=True)


def shares_engines(cfg: SynthConfig) -> bool:
    """Sampling and refinement on one engine pool: both vLLM, same model."""
    return (cfg.share_engines and cfg.sampler == "vllm" and cfg.refiner == "self"
            and cfg.refine_model in ("", cfg.model))


def _generator(cfg, *, api: bool, api_config, engine, sampling, request: str, output: str,
               index: str, tokens: str, error: str, engines=None, priority: int = 0):
    """A ``ds -> ds`` generation stage: vLLM engines (``engines``: a shared pool, else
    ray.data.llm's own), or an OpenAI-compatible endpoint."""
    cols = dict(output_column=output, sample_column=index, tokens_column=tokens,
                error_column=error)
    if engines:
        from selfdebug.llm.engine_pool import build_pool_generator

        return build_pool_generator(engines, engine, sampling, priority=priority, chat=True,
                                    num_cpus=cfg.map_cpus, prompt_column=request, **cols)
    if api:
        from selfdebug.llm.teacher import build_teacher_generator

        return build_teacher_generator(replace(api_config, n=sampling.n), messages_column=request,
                                       num_actors=cfg.api_actors, batch_size=cfg.api_batch_size,
                                       num_cpus=cfg.map_cpus, **cols)
    from selfdebug.llm.generate import build_generator

    return build_generator(engine, sampling, prompt_column=request, **cols)


def _to_rows(batch) -> list[dict]:
    return batch.to_pylist()


def _from_rows(rows: list[dict]):
    import pyarrow as pa

    return pa.Table.from_pylist(rows)


def _dedupe(batch, ledger):
    import ray

    return _from_rows(ray.get(ledger.group.remote(_to_rows(batch))))


def _record_samples(batch, ledger):
    import ray

    ray.get(ledger.add_samples.remote(_to_rows(batch)))
    return batch


def _record_debug(batch, ledger):
    import ray

    ray.get(ledger.add_debug.remote(_to_rows(batch)))
    return batch.select(["record_id"])  # the driver only counts


def build_dataset(cfg: SynthConfig, problems: dict, plan: dict[int, list[str]],
                  pending: list[int], ledger, sample_model: str, refine_model: str,
                  engines=None):
    """The lazy dataset for the ``pending`` shards; consuming it runs the pipeline.
    ``engines``: the shared engine pool (`shares_engines`), else None."""
    import ray

    from selfdebug.llm.engine_pool import REFINE_PRIORITY, SAMPLE_PRIORITY
    from selfdebug.sandbox.actor import execute_dataset

    small = {"num_cpus": cfg.map_cpus}
    arrow = {"batch_format": "pyarrow", **small}
    barrier = (lambda ds: ds.materialize()) if cfg.staged else (lambda ds: ds)
    sample_api, refine_api = cfg.sampler == "api", cfg.refiner == "teacher"

    # Prompts: a shared engine pool renders messages (JSON) with its own tokenizer; for
    # ray.data.llm they are rendered here, once (one tokenizer load, not one per worker).
    render_with = None if sample_api or engines else sample_model
    items = [{**R.problem_row(problems[t], s), "gen_request": R.generate_request(
        problems[t].prompt, render_with)} for s in pending for t in plan[s]]
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(pending)))
    sample = _generator(
        cfg, api=sample_api, api_config=cfg.sampler_api,
        engine=None if sample_api else cfg.engine.for_model(sample_model),
        sampling=_sampling(cfg.sampling, cfg.seed), request="gen_request",
        output="completion", index="sample_index", tokens="sample_tokens",
        error="generation_error", engines=engines, priority=SAMPLE_PRIORITY)
    # drop_columns' tasks default to a whole CPU: on a 2-CPU cluster they never ran (#17)
    ds = barrier(sample(ds).map(R.extract_sample, **small).drop_columns(["gen_request"], **small))
    ds = barrier(ds.map_batches(_dedupe, fn_kwargs={"ledger": ledger}, **arrow))

    problems_ref = ray.put(problems)
    execute = dict(**cfg.sandbox.pool_kwargs(), batch_size=cfg.sandbox.batch_size)
    ds = barrier(execute_dataset(ds, problems_ref, cfg.sandbox, code_column="code", **execute))
    ds = ds.map_batches(_record_samples, fn_kwargs={"ledger": ledger}, **arrow)

    if refine_api or engines:  # messages JSON: nothing to render, plain (fused) tasks
        ds = ds.flat_map(R.refine_requests, fn_kwargs={"modes": list(cfg.modes),
                                                       "model": None}, **small)
    else:
        ds = ds.flat_map(R.RefineRequests, fn_constructor_kwargs={
            "modes": list(cfg.modes), "model": refine_model},
            compute=ray.data.ActorPoolStrategy(size=1), **small)
    refine = _generator(
        cfg, api=refine_api, api_config=cfg.teacher,
        engine=None if refine_api else (cfg.engine if engines else cfg.refine_engine
                                        ).for_model(refine_model),
        sampling=_sampling(cfg.refine_sampling, cfg.seed + 1, cfg.attempts),
        request="refine_request", output="reply", index="attempt", tokens="refine_tokens",
        error="refine_error", engines=engines, priority=REFINE_PRIORITY)
    ds = barrier(refine(barrier(ds)).map(R.extract_refinement, **small))
    ds = barrier(execute_dataset(ds, problems_ref, cfg.sandbox, code_column="refined_code",
                                 prefix="refined_", **execute))
    names = model_names(cfg)
    ds = ds.map(R.debug_record, fn_kwargs={
        "sample_model": names[0], "refine_model": names[1],
        "sampling_params": sampling_params_json(cfg),
        "pipeline_version": selfdebug.PIPELINE_VERSION}, **small)
    return ds.map_batches(_record_debug, fn_kwargs={"ledger": ledger}, **arrow)


def stage_times(ds) -> list[dict]:
    """Per operator: active span (first start → last end) and summed task wall time."""
    try:
        summary = ds.get_stats_summary()
    except Exception:  # stats are best effort; the run's result does not depend on them
        return []
    out, seen = [], set()

    def walk(s):
        for parent in s.parents or []:
            walk(parent)
        if id(s) in seen:  # staged runs: materialized parents are shared
            return
        seen.add(id(s))
        for op in s.operators_stats:
            span = ((op.latest_end_time or 0) - (op.earliest_start_time or 0)
                    if op.earliest_start_time else None)
            wall = getattr(op.wall_time, "sum", None) if op.wall_time else None
            out.append({"stage": op.operator_name, "span_s": span, "task_wall_s": wall})

    walk(summary)
    return out


def run_pipeline(cfg: SynthConfig) -> dict:
    """Run (or resume) the job; returns what happened in this run."""
    import ray

    from selfdebug.progress import Watchdog, watch
    from selfdebug.ray_utils import init_ray
    from selfdebug.resources import describe, fit_to_cluster, synth_holders
    from selfdebug.synth.ledger import start_ledger

    cfg.validate()
    problems, plan = load_plan(cfg)
    manifest = S.read_manifest(cfg.out_dir)
    S.check_resume(manifest, cfg.fingerprint(), plan)
    S.clean_temp_files(cfg.out_dir)
    pending = S.pending_shards(manifest, plan)
    result = {"shards": len(plan), "pending_before": len(pending), "committed": [],
              "stages": [], "wall_s": 0.0, "incomplete": []}
    if not pending:
        return result
    sample_model = "" if cfg.sampler == "api" else resolve_model(cfg.model)
    refine_model = "" if cfg.refiner == "teacher" else resolve_model(
        cfg.refine_model or cfg.model)
    init_ray(cfg.ray_address or None)
    cfg, holders = fit_to_cluster(cfg, synth_holders(cfg))  # a joined cluster may be small
    t0 = time.time()
    debug_per_wrong = cfg.attempts * len(cfg.modes)
    ledger = start_ledger(cfg.out_dir, plan, cfg.sampling.n, debug_per_wrong,
                          cfg.fingerprint())
    engines = []
    if shares_engines(cfg):
        from selfdebug.llm.engine_pool import start_engines

        engines = start_engines(cfg.engine.for_model(sample_model))
    try:
        ds = build_dataset(cfg, problems, plan, pending, ledger, sample_model, refine_model,
                           engines)
        records = 0
        with Watchdog("synth", cfg.stall_timeout_s, ray_data=True, declared=describe(holders),
                      probe=lambda: ray.get(ledger.progress.remote(), timeout=30)) as wd:
            for batch in watch(ds.iter_batches(batch_size=None, batch_format="pyarrow"), wd):
                records += batch.num_rows
        progress = ray.get(ledger.progress.remote())
    finally:  # committed shards are on disk already; a failed run resumes from them
        for actor in [ledger, *engines]:
            ray.kill(actor)
    result.update(committed=progress["committed"], incomplete=progress["open"],
                  wall_s=time.time() - t0, stages=stage_times(ds), debug_rows_streamed=records)
    return result
