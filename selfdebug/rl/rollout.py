"""Rollouts: explain+refine and refine answers from the policy's vLLM engines (`EnginePool`),
with their token ids and behaviour log-probabilities, scored by `rewards.RewardScorer`.

Which items a step uses and the sampling seeds depend only on (seed, step): a resumed run
draws the same items with the same seeds for the steps it redoes.
"""

from __future__ import annotations

import asyncio
import random
import time
import zlib
from dataclasses import dataclass, field

from selfdebug.llm.extract import extract_code, extract_explanation
from selfdebug.llm.prompts import REFINE_MESSAGES
from selfdebug.rl.data import RLItem
from selfdebug.rl.rewards import RewardResult, explanation_end_token


@dataclass
class Rollout:
    """One answer to one item."""

    item_id: str
    task_id: str
    mode: str  # explain_refine | refine
    group: int  # index of its item within the step (answers of one item share it)
    prompt_ids: list[int]
    response_ids: list[int]
    behaviour_logprobs: list[float]  # log π_behaviour of each response token (vLLM)
    text: str
    code: str
    explanation: str
    explain_end: int  # response token index that ends the explanation; −1: none
    finish_reason: str
    error: str = ""
    reward: RewardResult = field(default_factory=RewardResult)


def items_for_step(n_items: int, per_step: int, seed: int, step: int) -> list[int]:
    """``per_step`` item indices for ``step``: epochs of seeded permutations, so every item
    is used once before any repeats."""
    out: list[int] = []
    start = step * per_step
    while len(out) < per_step:
        epoch, offset = divmod(start + len(out), n_items)
        order = list(range(n_items))
        random.Random(zlib.crc32(f"{seed}/{epoch}".encode())).shuffle(order)
        out.extend(order[offset:offset + per_step - len(out)])
    return out


def mode_for(item_index: int, step: int, modes: list[str]) -> str:
    """Modes alternate over items and steps (both kinds every step when there are two)."""
    return modes[(item_index + step) % len(modes)]


def build_requests(items: list[RLItem], indices: list[int], step: int, modes: list[str],
                   sampling: dict, seed: int):
    from selfdebug.llm.engine_pool import GenerationRequest

    reqs = []
    for i in indices:
        it = items[i]
        mode = mode_for(i, step, modes)
        messages = REFINE_MESSAGES[mode](it.prompt, it.wrong_code, it.feedback)
        params = {**sampling, "seed": zlib.crc32(f"{seed}/{step}/{it.item_id}".encode())}
        reqs.append((mode, GenerationRequest(messages=messages, sampling=params, logprobs=True)))
    return reqs


def _rollouts(item: RLItem, mode: str, group: int, completions, tokenizer) -> list[Rollout]:
    out = []
    for c in completions:
        expl = extract_explanation(c.text) if mode == "explain_refine" else ""
        end = explanation_end_token(tokenizer, c.token_ids, c.text, expl) if expl else -1
        out.append(Rollout(
            item.item_id, item.task_id, mode, group, list(c.prompt_token_ids),
            list(c.token_ids), list(c.logprobs or []), c.text, extract_code(c.text), expl, end,
            c.finish_reason, c.error or ("" if c.token_ids else "no tokens generated")))
    return out


def _answers(item: RLItem, rollouts: list[Rollout]) -> list[dict]:
    return [{"task_id": r.task_id, "code": r.code, "explanation": r.explanation,
             "code_refs": item.code_refs, "expl_refs": item.expl_refs} for r in rollouts]


async def collect(pool, scorer, tokenizer, items: list[RLItem], step: int,
                  cfg) -> tuple[list[Rollout], dict]:
    """Sample ``sampling.n`` answers for each of the step's items and score them: each
    item's answers go to the scorer as soon as they are generated, so rewards overlap
    the generation of the other items. A failed request becomes rollouts with ``error``
    (scored as failures, not trained on)."""
    indices = items_for_step(len(items), cfg.items_per_step, cfg.seed, step)
    sampling = {k: v for k, v in cfg.sampling.params("", 0).items() if k != "seed"}
    sampling["n"] = cfg.sampling.n
    reqs = build_requests(items, indices, step, list(cfg.modes), sampling, cfg.seed)
    groups: list[list[Rollout]] = [[] for _ in indices]
    t0 = time.perf_counter()

    async def one(g: int, i: int, mode: str, req) -> None:
        (completions,) = await pool.agenerate([req])
        groups[g] = _rollouts(items[i], mode, g, completions, tokenizer)
        scorer.submit(_answers(items[i], groups[g]))  # tickets follow completion order
        order.append(g)

    order: list[int] = []
    await asyncio.gather(*(one(g, i, mode, req)
                           for g, (i, (mode, req)) in enumerate(zip(indices, reqs))))
    gen_s = time.perf_counter() - t0
    for g, results in zip(order, await scorer.finish()):
        for r, res in zip(groups[g], results):
            r.reward = res if not r.error else RewardResult(failures=["generation"])
    rollouts = [r for grp in groups for r in grp]
    return rollouts, {"generation_s": gen_s,
                      "rewards_wait_s": time.perf_counter() - t0 - gen_s,
                      "generated_tokens": sum(len(r.response_ids) for r in rollouts)}
