"""The sandbox as a library: ``SandboxPool.judge_rows`` in-process and ``SandboxActorPool``
from a plain driver on a real local Ray cluster (no Ray Data, no CLI)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

from selfdebug.sandbox.judge import SandboxConfig
from selfdebug.sandbox.pool import SandboxPool
from selfdebug.schema import Problem, TestSuite

ADD = Problem(task_id="t/add", prompt="", entry_point="add",
              canonical_solution="def add(a, b):\n    return a + b\n",
              tests=TestSuite(kind="assert", asserts=["assert add(1, 2) == 3",
                                                      "assert add(2, 2) == 4"]), source="t")
GOOD, BAD = ADD.canonical_solution, "def add(a, b):\n    return a - b\n"


def _adhoc(task_id: str, expected: int) -> Problem:
    """A Serve request's own tests: the same task_id may carry different tests."""
    return Problem(task_id=task_id, prompt="", entry_point="sq",
                   canonical_solution="def sq(x):\n    return x * x\n",
                   tests=TestSuite(kind="assert", asserts=[f"assert sq(3) == {expected}"]),
                   source="request")


def _rows():
    return [
        {"task_id": "t/add", "code": GOOD, "id": 0},
        {"task_id": "t/add", "code": BAD, "id": 1},
        {"problem": _adhoc("req", 9), "code": "def sq(x):\n    return x * x\n", "id": 2},
        # same task_id, other tests: must not reuse the first request's preparation
        {"problem": _adhoc("req", 10), "code": "def sq(x):\n    return x * x\n", "id": 3},
        {"task_id": "nope", "code": GOOD, "id": 4},
        {"task_id": "t/add", "id": 5},
        {"problem": "not a problem", "code": GOOD, "id": 6},
    ]


def _check(results):
    assert [r["id"] for r in results] == list(range(7))  # input order, every row
    assert [r["status"] for r in results] == ["passed", "failed", "passed", "failed",
                                              "error", "error", "error"]
    assert all("code" not in r and "problem" not in r for r in results)
    assert results[2]["task_id"] == results[3]["task_id"] == "req"
    assert "unknown task_id 'nope'" in results[4]["feedback"]
    assert "no 'code' string" in results[5]["feedback"]
    assert "not a Problem" in results[6]["feedback"]
    assert results[1]["outcomes"] == ["fail", "fail"] and results[1]["total"] == 2


def test_in_process_pool_judges_rows_with_known_and_adhoc_problems(tmp_path):
    pool = SandboxPool({"t/add": ADD}, SandboxConfig(cache_dir=str(tmp_path)), workers=2)
    try:
        _check(pool.judge_rows(_rows()))
    finally:
        pool.close()


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_actor_pool_from_a_plain_driver_survives_a_killed_actor(ray_cluster, tmp_path):
    from selfdebug.sandbox.actor_pool import SandboxActorPool

    pool = SandboxActorPool({"t/add": ADD}, SandboxConfig(cache_dir=str(tmp_path)), actors=2,
                            workers_per_actor=1, chunk_size=3)
    try:
        assert "rlimits" in pool.isolation
        _check(pool.judge_all(_rows()))
        _check(asyncio.run(pool.ajudge(_rows())))
        assert pool.stats == {"actors_restarted": 0, "chunks_retried": 0, "rows_errored": 0}

        # SIGKILL one actor's process while it judges slow rows: it is replaced, its chunks
        # are retried, and every row still gets its real verdict, in order.
        slow = "import time\ndef add(a, b):\n    time.sleep(0.2)\n    return a + b\n"
        rows = [{"task_id": "t/add", "code": slow if i % 2 else BAD, "i": i} for i in range(40)]
        import ray

        victim = ray.get(pool._actors[0].pid.remote())
        threading.Timer(0.5, lambda: os.kill(victim, signal.SIGKILL)).start()
        t0 = time.monotonic()
        results = list(pool.judge(iter(rows)))  # a stream in, a stream out
        assert [r["i"] for r in results] == list(range(40))
        assert [r["status"] for r in results] == ["passed" if i % 2 else "failed"
                                                  for i in range(40)]
        assert pool.stats["actors_restarted"] == 1 and pool.stats["chunks_retried"] >= 1
        assert pool.stats["rows_errored"] == 0
        assert time.monotonic() - t0 < 120
    finally:
        pool.shutdown()


# ------------------------------------------------------------------ benchmark semantics
def test_cold_cache_several_workers_on_one_task_agree(tmp_path):
    """Expected outputs computed from the reference (a cold cache): workers that want the
    task while another prepares it wait for the finished preparation (issue 14: they saw
    `'NoneType' object is not subscriptable`)."""
    slow_ref = ("import time\ndef sq(x):\n    time.sleep(0.05)\n    return x * x\n")
    tasks = [Problem(task_id=f"t/sq{k}", prompt="", entry_point="sq", canonical_solution=slow_ref,
                     tests=TestSuite(kind="call", inputs=[[i] for i in range(6)]), source="t")
             for k in range(2)]
    pool = SandboxPool(tasks, SandboxConfig(cache_dir=str(tmp_path)), workers=4)
    try:
        rows = [{"task_id": t.task_id, "code": code, "i": i}
                for i, (t, code) in enumerate(
                    [(t, c) for t in tasks for c in ("def sq(x):\n    return x * x\n",
                                                     "def sq(x):\n    return x + x\n")] * 3)]
        results = pool.judge_rows(rows)
        assert [r["status"] for r in results] == ["passed", "failed"] * 6, results
        assert all("internal error" not in r["feedback"] for r in results)
    finally:
        pool.close()


def test_unreadable_references_and_bare_signatures_are_clear_verdicts(tmp_path):
    odd = Problem(task_id="t/odd", prompt="", entry_point="f",
                  canonical_solution=("class Box:\n    pass\n"
                                      "def f(x):\n    return Box() if x else 'x' * 70_000_000\n"),
                  tests=TestSuite(kind="call", inputs=[[1], [0]]), source="t")
    bare = Problem(task_id="HumanEval/bare", prompt="def f(x):\n", entry_point="f",
                   canonical_solution="def f(x):\n    return x + 1\n",
                   tests=TestSuite(kind="assert", asserts=["assert candidate(1) == 2"],
                                   prelude="def f(x):\n\nimport math\n"),
                   source="humaneval", completion_prefix="def f(x):\n")
    pool = SandboxPool([odd, bare], SandboxConfig(cache_dir=str(tmp_path)), workers=1)
    try:
        r = pool.judge_row({"task_id": "t/odd", "code": odd.canonical_solution})
        assert r["status"] == "failed" and "no verdict possible" in r["feedback"], r
        assert "internal error" not in r["feedback"]
        good = pool.judge_row({"task_id": "HumanEval/bare", "code": bare.canonical_solution})
        bad = pool.judge_row({"task_id": "HumanEval/bare", "code": "def f(x):\n    return x\n"})
        assert (good["status"], bad["status"]) == ("passed", "failed"), (good, bad)
    finally:
        pool.close()
