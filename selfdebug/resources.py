"""Sizing a job's actors to the Ray cluster it joins.

A job started by `selfdebug synth` makes its own local cluster with more logical CPUs than
cores (`ray_utils.init_ray`), so its fractional actors always fit. The same job submitted
to a head started with ``--num-cpus 2`` found its long-lived actors (vLLM engines, sandbox
actors, engine clients) holding every CPU, and Ray Data's plain tasks waited forever for
budget (``backpressured: ResourceBudget``, measured: 15 min). Here every job declares the
CPUs its long-lived actors hold (a `Holder` per config field); when their sum exceeds
``share`` of the cluster's CPUs, all of them are scaled down together (logical CPUs only:
what an actor really uses is not changed by the number, only where it may be placed), and
Ray Data is told the CPUs the non-Ray-Data actors hold so that its budget is real.

Clusters that autoscale from zero workers report no CPUs yet: nothing is scaled and the
declared demands wait for nodes (the stall watchdog reports them if none come).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SHARE = 0.5  # of the cluster's CPUs for long-lived actors; the rest runs Ray Data's tasks
MIN_CPUS = 0.01


@dataclass
class Holder:
    """``count`` actors holding ``cpus`` each, set by config field ``path`` (dotted)."""

    name: str
    count: int
    cpus: float
    path: str
    # Counted in Ray Data's own budget (its actor pools; Ray Train's workers, which Ray
    # Train excludes itself); False: started beside the dataset, subtracted from its limit.
    in_ray_data: bool = True


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _set(obj: Any, path: str, value: Any) -> Any:
    """A copy of dataclass ``obj`` with dotted ``path`` replaced."""
    head, _, rest = path.partition(".")
    if not rest:
        return dataclasses.replace(obj, **{head: value})
    return dataclasses.replace(obj, **{head: _set(getattr(obj, head), rest, value)})


def cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 0.0))


def describe(holders: list[Holder]) -> dict[str, str]:
    """For the stall message: what each holder asks for."""
    return {h.name: f"{h.count} × {h.cpus:g} CPU" for h in holders if h.count}


def fit_to_cluster(cfg: Any, holders: list[Holder], *, share: float = SHARE,
                   cpus: float | None = None, log: Callable[[str], None] | None = print
                   ) -> tuple[Any, list[Holder]]:
    """(cfg with its holders' CPUs scaled to fit ``share`` of the cluster, the holders as
    sized). Also limits Ray Data to the CPUs left beside the non-Ray-Data holders.
    A config with ``fit_resources: false`` is returned as it is."""
    limit_ray_data(None)  # a previous stage's limit in this process does not carry over
    if not getattr(cfg, "fit_resources", True):  # the job's own numbers, as written
        return cfg, holders
    total = cluster_cpus() if cpus is None else cpus
    wanted = sum(h.count * h.cpus for h in holders)
    if total <= 0 or wanted <= 0:
        return cfg, holders
    scale = min(1.0, share * total / wanted)
    sized = []
    for h in holders:
        new = h.cpus if scale >= 1.0 else max(MIN_CPUS, round(h.cpus * scale, 4))
        if new != h.cpus:
            cfg = _set(cfg, h.path, new)
        sized.append(dataclasses.replace(h, cpus=new))
    if scale < 1.0 and log:
        log(f"resources: the job's actors asked for {wanted:g} of the cluster's {total:g} "
            f"CPUs; scaled to {share:.0%} so Ray Data's tasks can run: "
            + ", ".join(f"{h.name} {h.count} × {h.cpus:g}" for h in sized if h.count))
    outside = sum(h.count * h.cpus for h in sized if not h.in_ray_data)
    limit_ray_data(total - outside)
    return cfg, sized


def limit_ray_data(cpus: float | None) -> None:
    """Ray Data sizes its budget from the cluster's CPUs; actors started beside the
    dataset hold some of them, which it would otherwise count as its own. None: back to
    the cluster's size (Ray Data's default)."""
    from ray.data import DataContext

    options = DataContext.get_current().execution_options
    cpu = float("inf") if cpus is None else max(cpus, MIN_CPUS)
    options.resource_limits = options.resource_limits.copy(cpu=cpu)


# ---------------------------------------------------------------- per-job plans
def _engine_cpus(engine) -> float:
    if engine.num_cpus is not None:
        return float(engine.num_cpus)
    return 0.5 if engine.resolved_cpu() else 1.0


def synth_holders(cfg) -> list[Holder]:
    """Long-lived actors of `selfdebug.synth.pipeline` for ``cfg``."""
    from selfdebug.synth.config import shares_engines

    holders = [Holder("sandbox actors", 2 * cfg.sandbox.actors, cfg.sandbox.cpus_per_actor,
                      "sandbox.cpus_per_actor")]
    if cfg.sampler == "vllm":  # an EnginePool, started beside the dataset
        holders.append(Holder("vLLM engines (shared pool)" if shares_engines(cfg) else
                              "vLLM sample engines", max(1, cfg.engine.num_replicas),
                              _engine_cpus(cfg.engine), "engine.num_cpus", in_ray_data=False))
    if cfg.refiner == "self" and not shares_engines(cfg):  # ray.data.llm's own pool
        holders.append(Holder("vLLM refine engines", max(1, cfg.refine_engine.num_replicas),
                              _engine_cpus(cfg.refine_engine), "refine_engine.num_cpus"))
    return holders


def eval_holders(cfg) -> list[Holder]:
    """Long-lived actors of `selfdebug.evaluate` (one model's stage at a time)."""
    holders = [Holder("sandbox actors", cfg.sandbox.actors, cfg.sandbox.cpus_per_actor,
                      "sandbox.cpus_per_actor")]
    if any(m.engine == "vllm" for m in cfg.models):
        holders.append(Holder("vLLM engines", max(1, cfg.engine.num_replicas),  # EnginePool
                              _engine_cpus(cfg.engine), "engine.num_cpus", in_ray_data=False))
    return holders


def sft_holders(cfg) -> list[Holder]:
    """Ray Train workers: their placement group must leave CPUs to Ray Data's ingest."""
    # in_ray_data: Ray Train already excludes its workers' CPUs from Ray Data's budget
    return [Holder("Ray Train workers", cfg.num_workers, cfg.cpus_per_worker,
                   "cpus_per_worker", in_ray_data=True)]


def rl_holders(cfg) -> list[Holder]:
    """Long-lived actors of `selfdebug rl`: the policy's engines, the learner workers, the
    sandbox actors and the reward workers, all up for the whole run (no Ray Data)."""
    holders = [Holder("vLLM engines", max(1, cfg.engine.num_replicas), _engine_cpus(cfg.engine),
                      "engine.num_cpus", in_ray_data=False),
               Holder("sandbox actors", cfg.sandbox.actors, cfg.sandbox.cpus_per_actor,
                      "sandbox.cpus_per_actor", in_ray_data=False),
               Holder("reward workers", cfg.reward.workers, cfg.reward.worker_cpus,
                      "reward.worker_cpus", in_ray_data=False)]
    if cfg.use_ray_train:
        holders.append(Holder("Ray Train learner workers", cfg.num_workers,
                              cfg.cpus_per_worker, "cpus_per_worker", in_ray_data=False))
    return holders


def demo_holders(cfg) -> list[Holder]:
    """Long-lived actors of `selfdebug demo`, up together for the whole run: the engine
    pool, the sandbox actors and the trainer (the resident process, or each Ray Train run's
    workers)."""
    return [Holder("vLLM engines", max(1, cfg.engine.num_replicas), _engine_cpus(cfg.engine),
                   "engine.num_cpus", in_ray_data=False),
            Holder("sandbox actors", cfg.sandbox.actors, cfg.sandbox.cpus_per_actor,
                   "sandbox.cpus_per_actor", in_ray_data=False),
            Holder("trainer" if cfg.sft.num_workers == 1 else "Ray Train workers",
                   cfg.sft.num_workers, cfg.sft.cpus_per_worker, "sft.cpus_per_worker",
                   in_ray_data=False)]


def require_cpus(holders: list[Holder], cpus: float | None = None) -> None:
    """Fail now, naming what is missing, when a cluster has fewer CPUs than ``holders``
    hold together: for jobs whose actor sizes also set their threads (not scaled), which
    would otherwise wait for a placement that never comes. A cluster reporting no CPUs
    (autoscaling from zero) is not judged."""
    from selfdebug.errors import ClusterError

    total = cluster_cpus() if cpus is None else cpus
    wanted = sum(h.count * h.cpus for h in holders)
    if 0 < total < wanted:
        held = ", ".join(f"{k} {v}" for k, v in describe(holders).items())
        raise ClusterError(
            f"the job's actors hold {wanted:g} CPUs together ({held}) and the Ray cluster "
            f"has {total:g}",
            "start the head with more logical CPUs (e.g. `ray start --head --num-cpus "
            f"{math.ceil(wanted)}`: a placement number, not cores) or lower "
            + " / ".join(h.path for h in holders))
