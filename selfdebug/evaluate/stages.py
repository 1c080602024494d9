"""One evaluation stage on Ray: rendered prompts → replies → programs → sandbox verdicts.

A stage is the initial sampling of a model (all pending benchmarks at once), or one
refinement round (all pending benchmarks and both modes at once); every stage of a model
runs on the model's one `EnginePool`, started once per run (pipeline.py). Rows carry the
benchmark-qualified task id (see `tasks.qualify`) while inside Ray and leave with the plain
one. Rows carry the rendered ``prompt`` (rendered once here with the model's tokenizer:
it is stored with every result); a refinement row carries the index of the sample whose
chain it continues as ``chain_index`` (the generation stage writes ``sample_index``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from selfdebug.evaluate.config import EvalConfig, ModelSpec
from selfdebug.evaluate.oracle import DOUBLES, double_stage
from selfdebug.evaluate.tasks import program_from_reply, qualify, unqualify
from selfdebug.llm.prompts import REFINE_MESSAGES, generate_messages
from selfdebug.schema import Problem


def init_rows(model: str, benchmark: str, problems: list[Problem],
              render: Callable[[list[dict]], str],
              shots: list[tuple[str, str]] | None = None) -> list[dict]:
    """One row per task; the generator replicates it into n samples. ``shots``: few-shot
    (prompt, solution) turns before the task (base models, see problems/shots.py)."""
    return [{"model": model, "benchmark": benchmark, "task_id": qualify(benchmark, p.task_id),
             "mode": "init", "round": 0, "prompt": render(generate_messages(p.prompt, shots))}
            for p in problems]


def refine_rows(previous: list[dict], mode: str, round_: int, problems: dict[str, Problem],
                render: Callable[[list[dict]], str]) -> list[dict]:
    """One row per sample that failed in the previous round of this chain (or in Init).

    The model sees the problem, the program that was executed and its feedback.
    """
    rows = []
    for r in previous:
        if r["status"] == "passed":
            continue
        key = qualify(r["benchmark"], r["task_id"])
        messages = REFINE_MESSAGES[mode](problems[key].prompt, r["code"], r["feedback"])
        rows.append({"model": r["model"], "benchmark": r["benchmark"], "task_id": key,
                     "chain_index": int(r["sample_index"]), "mode": mode, "round": round_,
                     "prompt": render(messages)})
    return rows


def make_stage(spec: ModelSpec, pool, cfg: EvalConfig, canonical: dict[str, str], *,
               refine: bool) -> Callable:
    """``ds -> ds``: n samples per row (Init) or one refinement per row, on the model's
    engine ``pool`` (or its test double)."""
    n = 1 if refine else cfg.n
    if spec.engine in DOUBLES:
        return double_stage(spec.engine, canonical, n)
    settings = cfg.refine_sampling if refine else cfg.sampling
    seed = cfg.seed if (not refine or cfg.refine_seeded) else None
    return pool.ray_data_stage(replace(settings, n=n, seed=seed))


def _to_program(row: dict, programs: dict[str, tuple[str, str]]) -> dict:
    if "chain_index" in row:  # a refinement: the chain's sample, not the stage's index 0
        row["sample_index"] = row.pop("chain_index")
    prefix, entry_point = programs[row["task_id"]]
    row["code"], row["explanation"] = program_from_reply(row["generated_text"], prefix,
                                                         entry_point)
    return row


def _record(row: dict) -> dict:
    """A Ray row → one shard row (plain Python types, plain task id)."""
    benchmark, task_id = unqualify(str(row["task_id"]))
    return {
        "model": str(row["model"]), "benchmark": benchmark, "task_id": task_id,
        "sample_index": int(row["sample_index"]), "mode": str(row["mode"]),
        "round": int(row["round"]), "rendered_prompt": str(row["prompt"]),
        "generated_text": str(row["generated_text"] or ""),
        "explanation": str(row["explanation"] or ""), "code": str(row["code"] or ""),
        "status": str(row["status"]), "passed": int(row["passed"]),
        "total": int(row["total"]), "feedback": str(row["feedback"] or ""),
        "runtime": float(row["runtime"]), "outcomes": str(row["outcomes"]),
        "num_generated_tokens": int(row.get("num_generated_tokens") or 0),
        "generation_error": str(row.get("generation_error") or ""),
    }


def run_stage(rows: list[dict], generate: Callable, problems_ref,
              programs: dict[str, tuple[str, str]], cfg: EvalConfig) -> list[dict]:
    """Generate, extract and judge ``rows`` in one streaming Ray Data pipeline."""
    import ray

    from selfdebug.sandbox.actor import execute_dataset

    if not rows:
        return []
    # A few blocks per engine/sandbox actor so that generation, extraction and judging
    # overlap; many more only add per-task overhead (Init rows fan out n-fold later).
    blocks = 4 * (cfg.engine.num_replicas + cfg.sandbox.actors)
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), blocks)))
    ds = generate(ds)
    ds = ds.map(_to_program, fn_kwargs={"programs": programs}, num_cpus=0.25)
    ds = execute_dataset(ds, problems_ref, cfg.sandbox.judge_config(),
                         **cfg.sandbox.pool_kwargs(), code_column="code",
                         batch_size=cfg.sandbox.batch_size)
    return [_record(r) for r in ds.take_all()]
