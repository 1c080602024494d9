"""What the first learner worker drives besides training: rollouts on the engine pool and
rewards from the sandbox pool and reward workers, on an event loop of their own (a
thread), so a step's generation can run while the learner trains on the previous one."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from dataclasses import asdict

from selfdebug.rl import rollout
from selfdebug.rl.config import RLConfig
from selfdebug.rl.rewards import RewardScorer


def make_judge(problems: dict, cfg: RLConfig):
    """The sandbox pool the S_ut reward runs on (None for the CodeBLEU-only reward)."""
    if cfg.reward.kind != "ledex":
        return None
    from selfdebug.sandbox.actor_pool import SandboxActorPool
    from selfdebug.sandbox.judge import SandboxConfig

    s = asdict(cfg.sandbox)
    pool_args = {k: s.pop(k) for k in ("actors", "workers_per_actor", "cpus_per_actor")}
    chunk = s.pop("batch_size")  # rows per call to one actor
    return SandboxActorPool(problems, SandboxConfig(**s), chunk_size=chunk, **pool_args)


class Services:
    def __init__(self, cfg: RLConfig, pool, tokenizer, items, problems):
        self.cfg, self.pool, self.tokenizer, self.items = cfg, pool, tokenizer, items
        self.judge = make_judge(problems, cfg)
        self.scorer = RewardScorer(cfg.reward, self.judge)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="rl-rollouts",
                                       daemon=True)
        self.thread.start()

    def wait_ready(self, timeout_s: float = 600) -> None:
        self.pool.wait_ready(timeout_s)
        self.scorer.wait_ready(timeout_s)

    def collect(self, step: int) -> Future:
        """Start generating and scoring ``step``'s rollouts; a future of (rollouts, timing)."""
        return asyncio.run_coroutine_threadsafe(
            rollout.collect(self.pool, self.scorer, self.tokenizer, self.items, step, self.cfg),
            self.loop)

    def shutdown(self) -> None:
        self.scorer.shutdown()
        if self.judge is not None and hasattr(self.judge, "shutdown"):
            self.judge.shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
