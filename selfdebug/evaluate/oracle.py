"""TEST DOUBLES for a model: the "oracle" and "empty" engines.

They stand in for the *model* only (every reply still goes through extraction and the real
sandbox), so an evaluation run can be checked end to end without a model: the oracle must
score pass@1 = 100 on every benchmark and the empty engine 0. They are selected per model
with ``engine: oracle`` / ``engine: empty`` and are not meant for real evaluations.

Same contract as `EnginePool.ray_data_stage`: ``ds -> ds``, every input column kept, plus
``sample_index`` (0..n-1), ``generated_text``, ``num_generated_tokens`` and
``generation_error``.
"""

from __future__ import annotations

from collections.abc import Callable

from selfdebug.llm.prompts import assistant_answer

DOUBLES = ("oracle", "empty")


def reply_for(kind: str, canonical_solution: str) -> str:
    if kind == "oracle":
        return assistant_answer(canonical_solution)  # a fenced block, as a model would write
    if kind == "empty":
        return ""
    raise ValueError(f"unknown test-double engine {kind!r}; choose from {DOUBLES}")


def double_rows(row: dict, *, kind: str, canonical: dict[str, str], n: int) -> list[dict]:
    """``flat_map``: n replies of the double to one row."""
    if "sample_index" in row:
        raise ValueError("input rows already have a 'sample_index' column")
    text = reply_for(kind, canonical[row["task_id"]])
    return [{**row, "sample_index": k, "generated_text": text, "num_generated_tokens": 0,
             "generation_error": ""} for k in range(n)]


def double_stage(kind: str, canonical: dict[str, str], n: int) -> Callable:
    """A ``Dataset -> Dataset`` test double; ``canonical`` maps the rows' task_id to a program."""
    reply_for(kind, "")  # validate the kind now, not inside a Ray task

    def run(ds):
        return ds.flat_map(double_rows, fn_kwargs=dict(kind=kind, canonical=canonical, n=n),
                           num_cpus=0.25)

    return run
