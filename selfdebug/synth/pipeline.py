"""The synthesis pipeline: one lazy, streaming Ray Data dataset.

    problems → render → sample (vLLM | API) → extract → dedupe (ledger) → execute
      → record samples (ledger) → refine requests (wrong ones × modes) → generate K
      attempts (vLLM self | teacher) → extract → execute → debug records (ledger)

Every step is a Ray Data operator chained lazily, so the streaming executor runs the
engine pools and the sandbox pools at once and moves rows between them as they are
ready. The two per-problem steps (dedupe, shard assembly) go through the ledger actor
(see ledger.py) instead of a groupby, which would be a barrier over the whole dataset.

Generation stages all take chat messages (``messages`` JSON) and write the same columns
(`llm.engine_pool.OUTPUT_COLUMNS`). vLLM sampling runs on an `EnginePool` started once for
the run; self-refinement with the same model shares it (refine requests first). A separate
refine model (or ``share_engines: false``) gets its own `ray.data.llm` batch engines; an
OpenAI-compatible endpoint (``sampler: api``, ``refiner: teacher``) a `teacher_stage`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace

import selfdebug
from selfdebug.config import resolve_model
from selfdebug.synth import rows, shards
from selfdebug.synth.config import SynthConfig, resolve_source, shares_engines


def load_plan(cfg: SynthConfig):
    """(problems by task id, shard plan) in load order, over every source of the run."""
    from selfdebug.problems import load_problems

    by_id: dict = {}
    for spec in cfg.problem_sources():
        problems = load_problems(resolve_source(spec.source), split=spec.split or None,
                                 limit=spec.limit)
        if not problems:
            raise ValueError(f"no problems in {spec.source!r} (split={spec.split!r})")
        for p in problems:
            if p.task_id in by_id:
                raise ValueError(f"{spec.source}: task id {p.task_id!r} appears twice (in "
                                 "this source or an earlier one of the run)")
            by_id[p.task_id] = p
    return by_id, shards.plan_shards(list(by_id), cfg.shard_size)


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


def sample_stage(cfg: SynthConfig, pool):
    """The initial-sampling generation stage (``ds -> ds``)."""
    from selfdebug.llm.engine_pool import SAMPLE_PRIORITY
    from selfdebug.llm.teacher import teacher_stage

    sampling = _sampling(cfg.sampling, cfg.seed)
    if cfg.sampler == "api":
        return teacher_stage(replace(cfg.sampler_api, n=sampling.n), num_actors=cfg.api_actors,
                             batch_size=cfg.api_batch_size, num_cpus=cfg.map_cpus)
    return pool.ray_data_stage(sampling, priority=SAMPLE_PRIORITY, num_cpus=cfg.map_cpus)


def refine_stage(cfg: SynthConfig, pool, refine_model: str):
    """The refinement generation stage: the shared pool, the teacher, or own engines."""
    from selfdebug.llm.engine_pool import REFINE_PRIORITY
    from selfdebug.llm.generate import batch_stage
    from selfdebug.llm.teacher import teacher_stage

    sampling = _sampling(cfg.refine_sampling, cfg.seed + 1, cfg.attempts)
    if cfg.refiner == "teacher":
        return teacher_stage(replace(cfg.teacher, n=sampling.n), num_actors=cfg.api_actors,
                             batch_size=cfg.api_batch_size, num_cpus=cfg.map_cpus)
    if shares_engines(cfg):
        return pool.ray_data_stage(sampling, priority=REFINE_PRIORITY, num_cpus=cfg.map_cpus)
    return batch_stage(cfg.refine_engine.for_model(refine_model), sampling,
                       num_cpus=cfg.map_cpus)


def _to_rows(batch) -> list[dict]:
    return batch.to_pylist()


def _from_rows(records: list[dict]):
    import pyarrow as pa

    return pa.Table.from_pylist(records)


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
                  pending: list[int], ledger, refine_model: str, pool=None):
    """The lazy dataset for the ``pending`` shards; consuming it runs the pipeline.
    ``pool``: the sampling model's `EnginePool` (None with ``sampler: api``)."""
    import ray

    from selfdebug.problems.shots import shots_for_model
    from selfdebug.sandbox.actor import execute_dataset

    small = {"num_cpus": cfg.map_cpus}
    arrow = {"batch_format": "pyarrow", **small}
    barrier = (lambda ds: ds.materialize()) if cfg.staged else (lambda ds: ds)

    # few-shot turns for a base sampling model (one without a chat template) only
    shots = shots_for_model(cfg.few_shot, "" if cfg.sampler == "api" else
                            resolve_model(cfg.model), problems)
    items = [{**rows.problem_row(problems[t], s),
              "messages": rows.generate_request(problems[t].prompt, shots)}
             for s in pending for t in plan[s]]
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(pending)))
    ds = barrier(sample_stage(cfg, pool)(ds).map(rows.extract_sample, **small))
    ds = barrier(ds.map_batches(_dedupe, fn_kwargs={"ledger": ledger}, **arrow))

    problems_ref = ray.put(problems)
    execute = dict(**cfg.sandbox.pool_kwargs(), batch_size=cfg.sandbox.batch_size)
    ds = barrier(execute_dataset(ds, problems_ref, cfg.sandbox, code_column="code", **execute))
    ds = ds.map_batches(_record_samples, fn_kwargs={"ledger": ledger}, **arrow)

    ds = ds.flat_map(rows.refine_requests, fn_kwargs={"modes": list(cfg.modes)}, **small)
    refine = refine_stage(cfg, pool, refine_model)
    ds = barrier(refine(barrier(ds)).map(rows.extract_refinement, **small))
    ds = barrier(execute_dataset(ds, problems_ref, cfg.sandbox, code_column="refined_code",
                                 prefix="refined_", **execute))
    names = model_names(cfg)
    ds = ds.map(rows.debug_record, fn_kwargs={
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
    manifest = shards.read_manifest(cfg.out_dir)
    shards.check_resume(manifest, cfg.fingerprint(), plan)
    shards.clean_temp_files(cfg.out_dir)
    pending = shards.pending_shards(manifest, plan)
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
    pool = None
    if cfg.sampler == "vllm":
        from selfdebug.llm.engine_pool import EnginePool

        pool = EnginePool.start(cfg.engine.for_model(sample_model), name="synth")
    try:
        ds = build_dataset(cfg, problems, plan, pending, ledger, refine_model, pool)
        records = 0
        with Watchdog("synth", cfg.stall_timeout_s, ray_data=True, declared=describe(holders),
                      probe=lambda: ray.get(ledger.progress.remote(), timeout=30)) as wd:
            for batch in watch(ds.iter_batches(batch_size=None, batch_format="pyarrow"), wd):
                records += batch.num_rows
        progress = ray.get(ledger.progress.remote())
    finally:  # committed shards are on disk already; a failed run resumes from them
        ray.kill(ledger)
        if pool is not None:
            pool.shutdown()
    result.update(committed=progress["committed"], incomplete=progress["open"],
                  wall_s=time.time() - t0, stages=stage_times(ds), debug_rows_streamed=records)
    return result
