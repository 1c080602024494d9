"""The application builder: one Serve application = model deployment (`ray.serve.llm`
LLMServer on vLLM) + sandbox deployment + the HTTP ingress (`ingress.DebugIngress`).

The same builder serves `selfdebug serve` (Python), `serve deploy` / `serve run` config files
and the RayService manifest: import path ``selfdebug.serve.app:build_app`` with args
``{"config": "jobs/configs/serve-gpu.yaml", "overrides": ["model.path=/ckpt"]}`` (or the
config's keys inline). Redeploying it under the same application name with a new
``model.path`` is an in-place rolling update: Serve drains the old replicas' in-flight
requests before stopping them.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from selfdebug.config import _build, load_config, resolve_model, validate
from selfdebug.serve.config import ServeConfig

INGRESS_NAME = "SelfDebugIngress"
SANDBOX_NAME = "SandboxServer"


def llm_config(cfg: ServeConfig, model_path: str):
    """The `ray.serve.llm.LLMConfig` of the model deployment (CPU or GPU)."""
    from ray.serve.llm import LLMConfig

    from selfdebug.llm.config import engine_env, engine_kwargs

    m = cfg.model
    engine = m.engine.for_model(model_path)
    cpu = engine.resolved_cpu()
    per_worker = {"CPU": engine.num_cpus if engine.num_cpus is not None else 1.0}
    if not cpu:
        per_worker["GPU"] = 1
    kwargs = engine_kwargs(engine)
    kwargs.pop("tensor_parallel_size", None)
    # Serve exports vLLM's engine metrics (log_engine_metrics), which need its stats on.
    kwargs.pop("disable_log_stats", None)
    deployment: dict[str, Any] = {
        "autoscaling_config": m.autoscaling.options(),
        "max_ongoing_requests": m.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": m.replica_cpus},
        "logging_config": {"encoding": cfg.log_encoding},
        # Rolling update: new replicas come up while old ones serve (surge), and an old
        # replica finishes its in-flight requests before it stops.
        "max_surge_percent": m.surge_percent,
        "graceful_shutdown_timeout_s": cfg.debug.request_timeout_s,
    }
    extra = {"accelerator_type": m.accelerator_type} if m.accelerator_type and not cpu else {}
    return LLMConfig(
        model_loading_config={"model_id": m.model_id, "model_source": model_path},
        engine_kwargs={**kwargs, "tensor_parallel_size": engine.tensor_parallel_size},
        # Without bundles the engine asks for a GPU; on CPU one CPU bundle (DESIGN.md).
        placement_group_config={"bundles": [dict(per_worker)
                                            for _ in range(engine.tensor_parallel_size)]},
        runtime_env={"env_vars": engine_env(engine)},
        deployment_config=deployment,
        **extra,
    )


def sandbox_deployment(cfg: ServeConfig):
    from ray import serve

    from selfdebug.serve.sandbox import SandboxServer

    s = cfg.sandbox
    return serve.deployment(
        SandboxServer, name=SANDBOX_NAME,
        autoscaling_config={"min_replicas": s.actors, "max_replicas": max(s.actors,
                                                                           s.max_actors),
                            "target_ongoing_requests": s.target_ongoing_requests},
        # each fork server judges one program at a time; a little queue keeps them busy
        max_ongoing_requests=2 * s.workers_per_actor,
        ray_actor_options={"num_cpus": s.cpus_per_actor},
        logging_config={"encoding": cfg.log_encoding},
        max_surge_percent=100,  # CPU-only: a new replica is up before an old one stops
        graceful_shutdown_timeout_s=cfg.debug.sandbox_timeout_s,
    ).bind(s)


def build_debug_app(cfg: ServeConfig, *, model=None):
    """The application. ``model``: a bound deployment standing in for the LLM server
    (tests: a test double of the model only); default the vLLM-backed LLMServer."""
    from ray import serve
    from ray.llm._internal.serve.core.configs.openai_api_models import to_model_metadata
    from ray.llm._internal.serve.core.ingress.ingress import make_fastapi_ingress
    from ray.serve.llm import build_llm_deployment

    from selfdebug.serve.ingress import DebugIngress, make_fastapi_app

    cfg.validate()
    model_path = resolve_model(cfg.model.path)
    lc = llm_config(cfg, model_path)
    if model is None:
        model = build_llm_deployment(lc)
    endpoints = {
        "models": lambda app: app.get("/v1/models"),
        "model_data": lambda app: app.get("/v1/models/{model:path}"),
        "completions": lambda app: app.post("/v1/completions"),
        "chat": lambda app: app.post("/v1/chat/completions"),
        "debug": lambda app: app.post("/v1/debug"),
        "healthz": lambda app: app.get("/healthz"),
        "readyz": lambda app: app.get("/readyz"),
    }
    ingress_cls = make_fastapi_ingress(DebugIngress, endpoint_map=endpoints,
                                       app=make_fastapi_app(cfg))
    ingress = serve.deployment(
        ingress_cls, name=INGRESS_NAME,
        autoscaling_config=cfg.ingress.options(),
        max_ongoing_requests=max(64, int(4 * cfg.ingress.target_ongoing_requests)),
        ray_actor_options={"num_cpus": cfg.ingress_cpus},
        logging_config={"encoding": cfg.log_encoding},
        max_surge_percent=100,
        graceful_shutdown_timeout_s=cfg.debug.request_timeout_s,
    )
    return ingress.bind(
        llm_deployments={cfg.model.model_id: model},
        model_cards={cfg.model.model_id: to_model_metadata(cfg.model.model_id, lc)},
        sandbox=sandbox_deployment(cfg), config=cfg, tokenizer_path=model_path)


def load_serve_config(args: dict) -> ServeConfig:
    """Builder args → config: ``{"config": path, "overrides": [...]}`` and/or inline keys."""
    args = dict(args or {})
    path, overrides = args.pop("config", None), args.pop("overrides", []) or []
    if isinstance(overrides, str):
        overrides = [overrides]
    cfg = load_config(ServeConfig, path, overrides)
    if args:  # inline keys win over the file
        cfg = _build(ServeConfig, _merge(asdict(cfg), args), "")
        validate(cfg)
    return cfg


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) \
            else v
    return out


def build_app(args: dict):
    """Import path for `serve deploy`, `serve run` and RayService:
    ``selfdebug.serve.app:build_app``."""
    return build_debug_app(load_serve_config(args))
