"""TEST DOUBLES for a model: the "oracle" and "empty" engines.

They stand in for the *model* only (every reply still goes through extraction and the real
sandbox), so an evaluation run can be checked end to end without a model: the oracle must
score pass@1 = 100 on every benchmark and the empty engine 0. They are selected per model
with ``engine: oracle`` / ``engine: empty`` and are not meant for real evaluations.

Same contract as `selfdebug.llm.generate.build_generator`: ``ds -> ds``, every input column
kept, plus ``sample_column`` (0..n-1), ``output_column``, ``num_generated_tokens`` and
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


def _expand(row: dict, *, kind: str, canonical: dict[str, str], n: int, sample_column: str,
            output_column: str) -> list[dict]:
    if sample_column in row:
        raise ValueError(f"input rows already have a {sample_column!r} column")
    text = reply_for(kind, canonical[row["task_id"]])
    return [{**row, sample_column: k, output_column: text, "num_generated_tokens": 0,
             "generation_error": ""} for k in range(n)]


def build_double(kind: str, canonical: dict[str, str], n: int, *,
                 output_column: str = "generated_text", sample_column: str = "sample_index",
                 ) -> Callable:
    """A ``Dataset -> Dataset`` test double; ``canonical`` maps the rows' task_id to a program."""
    reply_for(kind, "")  # validate the kind now, not inside a Ray task

    def run(ds):
        return ds.flat_map(_expand, fn_kwargs=dict(
            kind=kind, canonical=canonical, n=n, sample_column=sample_column,
            output_column=output_column), num_cpus=0.25)

    return run
