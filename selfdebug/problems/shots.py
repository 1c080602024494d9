"""Few-shot examples for base models (LeDex samples from base models with a 3-shot prompt).

Shots are (problem prompt, reference solution) pairs drawn from a *prompt* split — MBPP's
tasks 1–10 exist for exactly this — and never from the problems being sampled or evaluated:
a shot whose task id is among them is an error, not a silent leak.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from selfdebug.problems.load import load_problems


@dataclass
class FewShotConfig:
    k: int = 0  # shots per prompt; 0 = none (models with a chat template never get shots)
    source: str = ""  # problem file or dataset name the shots come from
    split: str = "prompt"  # the split they are drawn from (MBPP: tasks 1-10)

    def validate(self) -> None:
        if self.k < 0:
            raise ValueError(f"few_shot.k must be >= 0, got {self.k}")
        if self.k and not self.source:
            raise ValueError("few_shot.k > 0 needs few_shot.source (e.g. the MBPP file)")


def few_shot_pairs(cfg: FewShotConfig, exclude: Iterable[str] = ()) -> list[tuple[str, str]]:
    """The first ``cfg.k`` problems of the prompt split that have a reference solution, as
    (prompt, code) pairs; raises if one of them is in ``exclude`` (the evaluated tasks)."""
    if not cfg.k:
        return []
    pool = [p for p in load_problems(cfg.source, split=cfg.split or None)
            if p.canonical_solution.strip()]
    shots = pool[:cfg.k]
    if len(shots) < cfg.k:
        raise ValueError(f"few_shot: {cfg.source} split {cfg.split!r} has {len(shots)} "
                         f"problems with a solution, {cfg.k} asked for")
    leaked = sorted({p.task_id for p in shots} & set(exclude))
    if leaked:
        raise ValueError(f"few_shot: shots {leaked} are among the problems being sampled or "
                         f"evaluated; draw them from another split (got {cfg.split!r})")
    return [(p.prompt, p.canonical_solution) for p in shots]


def shots_for_model(cfg: FewShotConfig, model_path: str, exclude: Iterable[str],
                    log=print) -> list[tuple[str, str]] | None:
    """The shots for a model's generate prompts: only when it has no chat template (a base
    model, or ``model_path`` "" = the plain template); chat models are prompted as trained."""
    if not cfg.k:
        return None
    if model_path:
        from selfdebug.llm.prompts import model_has_chat_template

        if model_has_chat_template(model_path):
            log(f"{model_path} has a chat template: prompts without few-shot turns")
            return None
    return few_shot_pairs(cfg, exclude=exclude)
