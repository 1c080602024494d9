"""The problem world: determinism, the combination split, hidden constants, canonical
solutions and the revealing feedback through the real sandbox (no Ray needed)."""

from __future__ import annotations

import ast
import json
import random
import re

import pytest

from selfdebug.problems import load_problems
from selfdebug.sandbox.pool import SandboxPool
from selfdebug.world.cli import main as world_main
from selfdebug.world.families import FAMILIES, hidden_constants
from selfdebug.world.generate import (
    WorldConfig,
    code,
    generate_world,
    prompt,
    split_combinations,
)
from selfdebug.world.mutate import mutate, wrong_constant

SMALL = WorldConfig(seed=3, train_problems=240, test_problems=60)


def _public(world):
    return [{k: v for k, v in r.items() if not k.startswith("_")}
            for s in ("train", "test") for r in world[s]]


def test_same_seed_same_world_other_seed_other_world():
    assert _public(generate_world(SMALL)) == _public(generate_world(SMALL))
    other = WorldConfig(seed=4, train_problems=240, test_problems=60)
    assert _public(generate_world(SMALL)) != _public(generate_world(other))


def test_heldout_combinations_never_in_train_but_their_operations_are():
    combos = split_combinations(SMALL)
    assert combos["test"] and not set(combos["train"]) & set(combos["test"])
    world = generate_world(SMALL)
    train = {r["combination"] for r in world["train"]}
    test = {r["combination"] for r in world["test"]}
    assert test and not train & test
    train_ops = {(c.split(":")[0], op) for c in combos["train"]
                 for op in c.split(":")[1].split(">")[0].split("+")}
    for c in test:
        fam = c.split(":")[0]
        assert all((fam, op) in train_ops for op in c.split(":")[1].split(">")[0].split("+"))
    # every family is represented in both splits
    assert {r["family"] for r in world["test"]} == set(FAMILIES)


def test_hidden_constants_are_equally_frequent_within_each_split_and_family():
    # a skewed split would be a prior generation-only training can learn without feedback
    world = generate_world(WorldConfig(seed=1, train_problems=600, test_problems=150))
    for split, records in world.items():
        for name, fam in FAMILIES.items():
            values = [r["constant"] for r in records if r["family"] == name]
            if not fam.hidden:
                assert set(values) == {None}
                continue
            counts = [values.count(v) for v in hidden_constants(fam.kind)]
            assert sum(counts) == len(values) > 0, (split, name)
            assert max(counts) - min(counts) <= 1, (split, name, counts)


def test_records_are_humaneval_format_with_3_to_5_tests(tmp_path):
    path = tmp_path / "world.jsonl"
    assert world_main(["--out", str(path), "--seed", "3", "--train-problems", "40",
                       "--test-problems", "10"]) == 0
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 50 and lines[0]["task_id"] == "world/train/0"
    problems = load_problems(path)
    assert len(problems) == 50
    for p in problems:
        assert p.source == "humaneval" and p.entry_point == "f"
        assert 3 <= len(p.tests.asserts) <= 5


def test_bad_world_config_is_refused():
    with pytest.raises(ValueError, match="unknown families"):
        generate_world(WorldConfig(families=["arith", "nope"]))
    with pytest.raises(ValueError, match="tests_per_problem"):
        generate_world(WorldConfig(tests_per_problem=9))


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    world = generate_world(SMALL)
    records = world["train"] + world["test"]
    path = tmp_path_factory.mktemp("world") / "w.jsonl"
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if not k.startswith("_")})
                            + "\n" for r in records))
    pool = SandboxPool(load_problems(path), None, 2)
    yield records, pool
    pool.close()


def test_canonical_solutions_pass_in_the_sandbox(judged):
    records, pool = judged
    results = pool.run_many([(r["task_id"], r["prompt"] + r["canonical_solution"])
                             for r in records])
    bad = [(r["task_id"], x.feedback) for r, x in zip(records, results) if x.status != "passed"]
    assert not bad
    # the short program a model writes (no docstring) passes too
    results = pool.run_many([(r["task_id"], code(r["_spec"])) for r in records[:50]])
    assert all(x.status == "passed" for x in results)


def test_hidden_constant_is_in_the_first_failing_tests_feedback_only(judged):
    records, pool = judged
    rng = random.Random(0)
    hidden = [r for r in records if r["hidden"]][:40]
    assert len(hidden) >= 20
    for r in hidden:
        constant = r["constant"]
        spec = r["_spec"]
        other = wrong_constant(spec, rng)
        assert prompt(other) == r["prompt"]  # the description does not depend on it
        wrong = code(other)
        result = pool.run(r["task_id"], wrong)
        assert result.status == "failed"
        first = result.feedback.splitlines()[0]
        # `assert f(0) == 4` failed: f(0) returned 7
        m = re.match(r"`assert f\((.*)\) == (.*)` failed", first)
        assert m, first
        assert ast.literal_eval(m.group(1)) == FAMILIES[r["family"]].zero
        assert ast.literal_eval(m.group(2)) == constant
    # mutants of every kind really fail
    for r in records[:60]:
        m = mutate(r["_spec"], ast.literal_eval(r["inputs"]), rng)
        if m is not None:
            assert pool.run(r["task_id"], code(m)).status != "passed"


def test_structural_mutants_keep_the_hidden_constant_and_still_fail():
    """The base model's hidden-family repair examples: the bug is never the constant."""
    from selfdebug.world.generate import run_spec, test_inputs

    rng = random.Random(5)
    hidden = [r for r in generate_world(SMALL)["train"] if r["hidden"]][:40]
    changed = 0
    for r in hidden:
        spec = r["_spec"]
        inputs = test_inputs(spec, 4, random.Random(r["task_id"]))
        m = mutate(spec, inputs, rng, constant=False)
        if m is None:
            continue
        assert m.constant == spec.constant
        assert any(run_spec(m, x) != run_spec(spec, x) for x in inputs)
        changed += 1
    assert changed >= 30  # structural mutants exist for nearly every hidden problem
    consts = [mutate(r["_spec"], ast.literal_eval(r["inputs"]), rng) for r in hidden]
    assert any(m is not None and m.constant != r["_spec"].constant
               for m, r in zip(consts, hidden))  # the default still changes constants
