"""`run_eval`: every model × benchmark, Init then R refinement rounds, resumable; and the
summary (metrics, report, plots) that `recompute` rebuilds from the stored verdicts alone."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import yaml

from selfdebug.config import load_config, resolve_model
from selfdebug.evaluate.config import EvalConfig, ModelSpec, unit_fingerprint
from selfdebug.evaluate.metrics import compute_metrics
from selfdebug.evaluate.plots import write_plots
from selfdebug.evaluate.report import write_results
from selfdebug.evaluate.stages import init_rows, make_stage, refine_rows, run_stage
from selfdebug.evaluate.store import ResultStore, atomic_write_bytes
from selfdebug.evaluate.tasks import load_benchmark, qualified_problems
from selfdebug.metadata import run_metadata
from selfdebug.progress import Watchdog
from selfdebug.resources import describe, eval_holders, fit_to_cluster
from selfdebug.schema import Problem

CONFIG_FILE = "config.yaml"


class _Cluster:
    """Ray and the shared problems object, started on first use only (a complete run
    directory re-summarizes without Ray)."""

    def __init__(self, cfg: EvalConfig, problems: dict[str, Problem]):
        self.cfg, self.problems, self._ref, self.holders = cfg, problems, None, []

    def problems_ref(self):
        if self._ref is None:
            import ray

            from selfdebug.ray_utils import init_ray

            init_ray(self.cfg.ray_address or None)
            self.cfg, self.holders = fit_to_cluster(self.cfg, eval_holders(self.cfg))
            self._ref = ray.put(self.problems)
        return self._ref

    def watchdog(self) -> Watchdog:
        """No progress for ``stall_timeout_s`` fails the stage naming what it waits for."""
        return Watchdog("eval", self.cfg.stall_timeout_s, ray_data=True,
                        declared=describe(self.holders))


class _Model:
    """Per-model lazies: resolved path, prompt renderer (tokenizer loaded once) and the
    engine pool, started on the first stage that has rows and kept for every later stage
    of the model (Init and all rounds): one engine start per model and run."""

    def __init__(self, spec: ModelSpec, cfg: EvalConfig):
        self.spec, self.cfg, self._path, self._render, self._pool = spec, cfg, None, None, None

    @property
    def path(self) -> str:
        if self._path is None:
            self._path = "" if self.spec.engine != "vllm" else resolve_model(self.spec.path)
        return self._path

    def pool(self):
        """The model's `EnginePool` (None for a test double); Ray must be up."""
        if self._pool is None and self.spec.engine == "vllm":
            from selfdebug.llm.engine_pool import EnginePool

            engine = self.cfg.engine.for_model(self.path, seed=self.cfg.seed)
            self._pool = EnginePool.start(engine, name=self.spec.name)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def render(self, messages: list[dict]) -> str:
        if self._render is None:
            from selfdebug.llm.prompts import render_prompt

            tokenizer = None  # test doubles: the plain template
            if self.spec.engine == "vllm":
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(self.path)
            self._render = lambda m: render_prompt(tokenizer, m)
        return self._render(messages)


def _check_resumable(cfg: EvalConfig, store: ResultStore) -> None:
    """Fail before any work when existing shards were made with other settings."""
    for m in cfg.models:
        for b in cfg.benchmarks:
            store.done(m.name, b.name, "init", 0, unit_fingerprint(cfg, m.name, b.name, "init"))
            for mode in cfg.modes:
                fp = unit_fingerprint(cfg, m.name, b.name, mode)
                for r in range(1, cfg.rounds + 1):
                    store.done(m.name, b.name, mode, r, fp)


def run_eval(cfg: EvalConfig, log: Callable[[str], None] = print) -> dict:
    """Run (or continue) the evaluation into ``cfg.out_dir``; returns results.json's data."""
    out = Path(cfg.out_dir).resolve()
    store = ResultStore(out)
    _check_resumable(cfg, store)
    atomic_write_bytes(out / CONFIG_FILE, yaml.safe_dump(asdict(cfg), sort_keys=False).encode())
    t0 = time.time()
    benches = {b.name: load_benchmark(b) for b in cfg.benchmarks}
    problems = qualified_problems(benches)
    canonical = {k: p.canonical_solution for k, p in problems.items()}
    programs = {k: (p.completion_prefix, p.entry_point) for k, p in problems.items()}
    cluster = _Cluster(cfg, problems)
    judged = 0
    for spec in cfg.models:
        model = _Model(spec, cfg)

        def stage(rows, refine, model=model, spec=spec):
            problems_ref = cluster.problems_ref()  # Ray first: the pool's actors need it
            model.cfg = cluster.cfg  # sized to the cluster joined (selfdebug.resources)
            gen = make_stage(spec, model.pool(), cluster.cfg, canonical, refine=refine)
            with cluster.watchdog():
                return run_stage(rows, gen, problems_ref, programs, cluster.cfg)

        try:
            judged += _run_model(cfg, store, model, benches, problems, stage, log)
        finally:  # the next model's engines need the resources
            model.close()
    data = summarize(cfg, store)
    data["run"] = {"seconds": round(time.time() - t0, 2), "samples_judged": judged}
    data["metadata"] = run_metadata(seed=cfg.seed, config=asdict(cfg))
    write_results(out, data)
    write_plots(out, data)
    log(f"results: {out / 'results.md'}")
    return data


def init_shots(cfg: EvalConfig, model, problems: dict[str, Problem],
               log: Callable) -> list[tuple[str, str]] | None:
    """Few-shot turns for the model's Init prompts (see problems.shots.shots_for_model),
    never drawn from an evaluated task."""
    from selfdebug.problems.shots import shots_for_model

    path = model.path if model.spec.engine == "vllm" else ""  # doubles: the plain template
    return shots_for_model(cfg.few_shot, path, {p.task_id for p in problems.values()}, log)


def _run_model(cfg: EvalConfig, store: ResultStore, model: _Model,
               benches: dict[str, list[Problem]], problems: dict[str, Problem],
               stage: Callable, log: Callable) -> int:
    """Init, then rounds 1..R of every mode; skips complete units. Returns rows judged."""
    name = model.spec.name

    def fp(bench: str, mode: str) -> str:
        return unit_fingerprint(cfg, name, bench, mode)

    judged = 0
    pending = [b for b in benches if not store.done(name, b, "init", 0, fp(b, "init"))]
    if pending:
        t = time.time()
        shots = init_shots(cfg, model, problems, log)
        rows = [r for b in pending for r in init_rows(name, b, benches[b], model.render, shots)]
        results = stage(rows, refine=False)
        for b in pending:
            store.write(name, b, "init", 0, [r for r in results if r["benchmark"] == b],
                        fp(b, "init"))
        judged += len(results)
        log(f"{name}: init on {pending}: {len(results)} samples in {time.time() - t:.1f} s")
    for r in range(1, cfg.rounds + 1):
        units = [(b, m) for b in benches for m in cfg.modes
                 if not store.done(name, b, m, r, fp(b, m))]
        if not units:
            continue
        t = time.time()
        inputs = {}
        for b, m in units:
            prev = store.read(name, b, "init", 0) if r == 1 else store.read(name, b, m, r - 1)
            inputs[(b, m)] = refine_rows(prev, m, r, problems, model.render)
        rows = [row for unit_rows in inputs.values() for row in unit_rows]
        results = stage(rows, refine=True) if rows else []  # nothing left to fix: no engine
        for b, m in units:
            mine = [x for x in results if x["benchmark"] == b and x["mode"] == m]
            store.write(name, b, m, r, mine, fp(b, m))
        judged += len(results)
        log(f"{name}: round {r} on {units}: {len(results)} refinements in "
            f"{time.time() - t:.1f} s")
    return judged


def summarize(cfg: EvalConfig, store: ResultStore) -> dict:
    """Metrics from the stored verdicts only (what --recompute calls)."""
    models = [m.name for m in cfg.models]
    benchmarks = [b.name for b in cfg.benchmarks]
    results = compute_metrics(store.read_verdicts(), models, benchmarks, cfg.modes,
                              cfg.rounds, cfg.ks, available=store.available())
    return {"name": cfg.name, "n": cfg.n, "ks": list(cfg.ks), "rounds": cfg.rounds,
            "modes": list(cfg.modes), "models": models, "benchmarks": benchmarks,
            "results": results}


def recompute(results_dir: str | Path) -> dict:
    """Recompute every metric from ``results_dir``'s shards (no model, no Ray); writes
    ``recomputed.{json,md}`` there and returns the data (``matches_results_json`` says
    whether results.json agrees)."""
    import json

    from selfdebug.evaluate.report import write_results as write

    root = Path(results_dir).resolve()
    cfg = load_config(EvalConfig, root / CONFIG_FILE)
    store = ResultStore(root)
    data = summarize(cfg, store)
    stored = root / "results.json"
    if stored.is_file():
        data["matches_results_json"] = json.loads(stored.read_text())["results"] == data["results"]
    data["metadata"] = run_metadata(seed=cfg.seed, config={"recomputed_from": str(root)})
    write(root, data, name="recomputed")
    return data
