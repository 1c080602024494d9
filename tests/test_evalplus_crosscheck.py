"""selfdebug's verdicts next to the `evalplus` package's own judging, sample by sample.

Every HumanEval+ task (../shared/data/HumanEvalPlus-v0.1.10.jsonl.gz) is judged on its
canonical solution and on deterministic mutants of it, by selfdebug's sandbox Judge and by
``evalplus.eval.untrusted_check`` (the function `evalplus.evaluate` calls), with the
expected outputs evalplus computes itself (``evalplus.gen.util.trusted_exec``). A sample
passes evalplus when its base run and its plus run both pass, as `evalplus.evaluate` counts
it. The verdicts must agree on every sample except the exceptions named in KNOWN below.

Subset (to stay near 2 minutes on 2 cores): all 164 tasks, their base inputs and the first
PLUS_INPUTS plus inputs (both judges get the same inputs). SELFDEBUG_EVALPLUS_FULL=1 runs
every plus input (about 124,000 calls per program): measured on this 2-core machine, 408
samples, the same verdicts with the same single exception, in 9 minutes (busy machine).
"""

from __future__ import annotations

import ast
import copy
import gzip
import json
import os
import time

import pytest

evalplus_eval = pytest.importorskip("evalplus.eval", reason="the evalplus package is a dev extra")

from evalplus.gen.util import trusted_exec  # noqa: E402

from selfdebug.problems import load_problems  # noqa: E402
from selfdebug.sandbox.judge import Judge, SandboxConfig  # noqa: E402

FULL = os.environ.get("SELFDEBUG_EVALPLUS_FULL") == "1"
PLUS_INPUTS = None if FULL else 25


def _evalplus_version() -> str:
    from importlib.metadata import version

    return version("evalplus")


# Samples where the released evalplus is itself wrong; each names the reason.
# HumanEval/32 (find_zero): in evalplus <= 0.3.1 the special oracle checks the root and then
# `continue`s before `details[i] = True`, so the run reports FAIL for every program,
# the canonical solution included (fixed upstream after 0.3.1: evalplus/eval/__init__.py
# now records the pass before continuing). selfdebug judges a root within atol as passed.
KNOWN = {}
if _evalplus_version() in ("0.3.0", "0.3.1"):
    KNOWN["HumanEval/32"] = ("evalplus<=0.3.1's find_zero oracle never records a pass",
                             {"evalplus": False})


# ------------------------------------------------------------------ deterministic mutants
class _Mutator(ast.NodeTransformer):
    """Applies mutation ``kind`` to the ``index``-th matching node after line ``first_line``
    (the canonical body, not the prompt's helpers). ``done`` says whether it applied."""

    SWAP_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
                ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}
    SWAP_BIN = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.FloorDiv: ast.Mult,
                ast.Mod: ast.FloorDiv}

    def __init__(self, kind: str, first_line: int):
        self.kind, self.first_line, self.done = kind, first_line, False

    def _here(self, node) -> bool:
        return not self.done and getattr(node, "lineno", 0) > self.first_line

    def visit_While(self, node):  # loop conditions are left alone: mutants should terminate
        node.body = [self.visit(n) for n in node.body]
        node.orelse = [self.visit(n) for n in node.orelse]
        return node

    def visit_Compare(self, node):
        self.generic_visit(node)
        if self.kind == "cmp" and self._here(node) and type(node.ops[0]) in self.SWAP_CMP:
            node.ops[0] = self.SWAP_CMP[type(node.ops[0])]()
            self.done = True
        return node

    def visit_BinOp(self, node):
        self.generic_visit(node)
        if self.kind == "binop" and self._here(node) and type(node.op) in self.SWAP_BIN:
            node.op = self.SWAP_BIN[type(node.op)]()
            self.done = True
        return node

    def visit_Return(self, node):
        self.generic_visit(node)
        if self.kind == "return" and self._here(node) and node.value is not None:
            # `return x` -> `return x` for the first return only when it is a constant: off
            # by one for numbers, negated for booleans, reversed for sequences
            v = node.value
            if isinstance(v, ast.Constant) and isinstance(v.value, bool):
                node.value = ast.Constant(not v.value)
            elif isinstance(v, ast.Constant) and isinstance(v.value, int | float):
                node.value = ast.Constant(v.value + 1)
            else:
                return node
            self.done = True
        return node


MUTATIONS = ("cmp", "binop", "return")


def mutants(program: str, prompt: str) -> list[tuple[str, str]]:
    """(name, code) of each mutation that applies and changes the program's text."""
    first_line = prompt.count("\n")
    out = []
    for kind in MUTATIONS:
        tree = ast.parse(program)
        m = _Mutator(kind, first_line)
        new = ast.unparse(m.visit(tree))
        if m.done and new != ast.unparse(ast.parse(program)):
            out.append((kind, new))
    return out


# ------------------------------------------------------------------ the two judges
def _records(shared_data):
    with gzip.open(shared_data / "HumanEvalPlus-v0.1.10.jsonl.gz", "rt") as f:
        recs = [json.loads(line) for line in f]
    for r in recs:
        r["plus_input"] = r["plus_input"][:PLUS_INPUTS]
    return recs


def _evalplus_verdicts(rec, programs: list[str]) -> list[bool]:
    code = rec["prompt"] + rec["canonical_solution"]
    verdicts = [True] * len(programs)
    for part in ("base_input", "plus_input"):
        inputs = rec[part]
        if not inputs:
            continue
        expected, times = trusted_exec(code, copy.deepcopy(inputs), rec["entry_point"],
                                       record_time=True)
        for i, program in enumerate(programs):
            if not verdicts[i]:
                continue  # evalplus counts a plus pass only after a base pass
            stat, _ = evalplus_eval.untrusted_check(
                "humaneval", program, inputs, rec["entry_point"], expected=expected,
                atol=rec["atol"], ref_time=times, fast_check=True)
            verdicts[i] = stat == evalplus_eval.PASS
    return verdicts


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_evalplus_and_selfdebug_agree_on_humaneval_plus(shared_data, tmp_path, monkeypatch):
    # evalplus caps the address space of its child at 4 GiB; a pytest process that imported
    # torch already maps more, so the cap is left off (it is not part of the verdict rule)
    monkeypatch.setenv("EVALPLUS_MAX_MEMORY_BYTES", "-1")
    recs = _records(shared_data)
    problems = {p.task_id: p for p in load_problems(shared_data / "HumanEvalPlus-v0.1.10.jsonl.gz")}
    for p in problems.values():  # the same inputs as the evalplus side
        p.tests.inputs = p.tests.inputs[:p.tests.base_count + (PLUS_INPUTS or len(p.tests.inputs))]
    judge = Judge(problems, SandboxConfig(cache_dir=str(tmp_path / "cache")))
    t0 = time.time()
    disagreements, exceptions, samples, mutant_fails = [], {}, 0, 0
    try:
        for rec in recs:
            tid = rec["task_id"]
            canonical = rec["prompt"] + rec["canonical_solution"]
            named = [("canonical", canonical), *mutants(canonical, rec["prompt"])]
            ours = [judge.run(tid, code) for _, code in named]
            theirs = _evalplus_verdicts(rec, [code for _, code in named])
            for (name, _), mine, other in zip(named, ours, theirs):
                samples += 1
                mutant_fails += name != "canonical" and not other
                passed = mine.status == "passed"
                assert mine.status != "error" or "internal" not in mine.feedback, (tid, name, mine)
                if passed == other:
                    continue
                if tid in KNOWN and KNOWN[tid][1]["evalplus"] == other:
                    exceptions.setdefault(tid, []).append(name)
                    continue
                disagreements.append((tid, name, mine.status, mine.feedback[:300], other))
    finally:
        judge.close()
    print(f"{samples} samples ({len(recs)} tasks, canonical + mutants; {mutant_fails} mutants "
          f"fail under evalplus) in {time.time() - t0:.0f} s; known exceptions: {exceptions}")
    assert not disagreements, disagreements
    assert samples > 2 * len(recs) and mutant_fails > len(recs) / 2  # the mutants do bite
    # every named exception was actually met (an exception list cannot go stale unseen)
    assert set(exceptions) == set(KNOWN), (exceptions, KNOWN)
