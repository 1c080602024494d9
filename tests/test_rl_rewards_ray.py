"""Reward scoring on Ray: real sandbox actors and reward workers; a reward that hangs or
raises scores as a failure within its timeout, is counted, and scoring goes on."""

from __future__ import annotations

import asyncio
import time

import pytest

from selfdebug.rl.config import RewardConfig
from selfdebug.rl.rewards import FAULT_HANG, FAULT_RAISE, RewardScorer
from selfdebug.schema import Problem, TestSuite

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

GOOD = "def f():\n    return 7\n"
PROBLEMS = {"t/1": Problem("t/1", "Return 7.", "f", GOOD,
                           TestSuite("assert", asserts=["assert f() == 7", "assert f() > 1"]),
                           "test")}


def _answer(code, expl=""):
    return {"task_id": "t/1", "code": code, "explanation": expl, "code_refs": [GOOD],
            "expl_refs": []}


class HangingJudge:
    """A sandbox pool that never answers (a mock: the real pool bounds every run itself,
    so a hang there cannot be produced on purpose)."""

    async def ajudge(self, rows):
        await asyncio.sleep(10**6)


def test_scores_with_sandbox_and_codebleu(ray_cluster):
    from selfdebug.config import SandboxSection
    from selfdebug.rl.config import RLConfig
    from selfdebug.rl.services import make_judge

    cfg = RLConfig(reward=RewardConfig(embedding_model="", timeout_s=60),
                   sandbox=SandboxSection(timeout_floor=3.0))
    judge = make_judge(PROBLEMS, cfg)
    scorer = RewardScorer(cfg.reward, judge)
    try:
        res = asyncio.run(scorer.ascore([_answer(GOOD), _answer("def f():\n    return 3\n"),
                                         _answer("this is not python")]))
    finally:
        scorer.shutdown()
        judge.shutdown()
    assert [r.s_ut for r in res] == [1.0, 0.5, 0.0]  # 3 > 1 still passes
    assert res[0].s_cb == pytest.approx(1.0) and res[0].r_refine == pytest.approx(5.0)
    assert 0 < res[1].s_cb < 1 and res[1].r_refine == pytest.approx(5 * (0.5 + res[1].s_cb) - 5)
    assert res[0].passed and not res[1].passed and not any(r.failures for r in res)


def test_hanging_or_raising_rewards_fail_within_the_timeout(ray_cluster):
    cfg = RewardConfig(kind="ledex", embedding_model="", timeout_s=4.0, test_faults=True)
    scorer = RewardScorer(cfg, HangingJudge())
    try:
        scorer.wait_ready(120)
        t0 = time.perf_counter()
        res = asyncio.run(scorer.ascore([
            _answer(GOOD), _answer(GOOD + f"# {FAULT_HANG}\n"),
            _answer(GOOD + f"# {FAULT_RAISE}\n")]))
        took = time.perf_counter() - t0
        # the sandbox never answered: every S_ut is a failure; the similarity worker's hung
        # row timed out alone (its thread deadline), the raising row failed alone
        assert took < cfg.timeout_s + 3
        assert all("tests" in r.failures for r in res)
        assert "similarity" not in res[0].failures and res[0].s_cb == pytest.approx(1.0)
        assert "similarity" in res[1].failures and "similarity" in res[2].failures
        assert all(r.r_refine == pytest.approx(5 * r.s_cb - 5) for r in res)
        assert scorer.stats["timeouts"] >= 1 and scorer.stats["rows_failed"] == 3
        # the scorer keeps working after the failures
        cfg2 = RewardConfig(kind="codebleu_only", embedding_model="", timeout_s=30.0)
        again = RewardScorer(cfg2, None)
        try:
            (r,) = asyncio.run(again.ascore([_answer(GOOD)]))
            assert r.r_refine == pytest.approx(5.0) and not r.failures
        finally:
            again.shutdown()
    finally:
        scorer.shutdown()
