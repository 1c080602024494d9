"""RL items from synthesis outputs: (problem, wrong code w, feedback, R_c(w), E_c(w)).

The paper trains on every wrong program of its debug data, "successful and failed": each
distinct wrong initial sample w of a task, and each failed refinement (itself wrong code,
with the feedback it got). R_c(w) are the refinements of w that passed every test, E_c(w)
the non-empty explanations that led to them. Where R_c(w) is empty, S_cb is computed
against the problem's canonical solution and the item says so (``rc_fallback``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from selfdebug.schema import Problem


@dataclass
class RLItem:
    item_id: str
    task_id: str
    prompt: str
    wrong_code: str
    feedback: str
    code_refs: list[str]  # R_c(w), or [canonical solution] when rc_fallback
    expl_refs: list[str] = field(default_factory=list)  # E_c(w)
    rc_fallback: bool = False  # R_c(w) was empty: code_refs = the canonical solution
    from_refinement: bool = False  # w is a failed refinement, not an initial sample

    def to_dict(self) -> dict:
        return asdict(self)


def _key(task_id: str, code: str) -> str:
    return f"{task_id}/{hashlib.sha1(code.encode()).hexdigest()[:12]}"


def build_items(records: Iterable[dict], problems: dict[str, Problem]) -> list[RLItem]:
    """One item per distinct (task, wrong code), in first-seen order. Records of tasks
    missing from ``problems`` are an error naming them (their tests are needed)."""
    items: dict[str, RLItem] = {}
    missing: set[str] = set()

    def item(task_id: str, prompt: str, code: str, feedback: str, refined: bool) -> RLItem:
        key = _key(task_id, code)
        if key not in items:
            items[key] = RLItem(key, task_id, prompt, code, feedback, [], [],
                                from_refinement=refined)
        return items[key]

    for r in records:
        if r["task_id"] not in problems:
            missing.add(r["task_id"])
            continue
        it = item(r["task_id"], r["prompt"], r["wrong_code"], r["feedback"], False)
        if r.get("correct"):
            if r["refined_code"] not in it.code_refs:
                it.code_refs.append(r["refined_code"])
            expl = (r.get("explanation") or "").strip()
            if expl and expl not in it.expl_refs:
                it.expl_refs.append(expl)
        elif (r.get("refined_code") or "").strip():
            item(r["task_id"], r["prompt"], r["refined_code"],
                 r.get("refined_feedback") or "", True)
    if missing:
        raise ValueError(f"{len(missing)} task(s) of the debug data are not among the loaded "
                         f"problems (check source/split/limit): {sorted(missing)[:5]}")
    for it in items.values():
        if not it.code_refs:
            it.code_refs = [problems[it.task_id].canonical_solution]
            it.rc_fallback = True
    return list(items.values())


def load_items(cfg) -> tuple[list[RLItem], dict[str, Problem]]:
    """The job's items and problems: from ``cfg.data_dirs`` (synthesis outputs), or none
    given, SFT's MBPP fixture records (mutated canonical solutions, placeholder feedback)
    for the first ``fixture_problems`` problems of ``cfg.source``."""
    from selfdebug.dataset import read_debug_records
    from selfdebug.problems.load import load_problems
    from selfdebug.synth.config import resolve_source

    problems = {p.task_id: p for p in load_problems(resolve_source(cfg.source),
                                                    split=cfg.split or None, limit=cfg.limit)}
    if not problems:
        raise ValueError(f"no problems in {cfg.source!r} (split={cfg.split!r})")
    if cfg.data_dirs:
        records = read_debug_records(list(cfg.data_dirs))
        if cfg.limit:  # the first N problems only: their records
            records = [r for r in records if r["task_id"] in problems]
    else:
        from selfdebug.train.fixture_data import fixture_rows

        problems = dict(list(problems.items())[:cfg.fixture_problems])
        records = fixture_rows(list(problems.values()))[0]
    items = build_items(records, problems)
    if not items:
        raise ValueError("no RL items: the debug data has no wrong programs for these problems")
    return items, problems
