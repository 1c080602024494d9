"""Wrong programs near a correct one: what a base model's mistakes look like.

Mutations act on the spec (change a parameter, swap in another operation of the
family, swap or drop a step, flip the branch, change the reduction or the constant), and
a mutant counts only when the reference semantics say it fails one of the problem's
tests, so a "wrong" program is never accidentally right.
"""

from __future__ import annotations

import random
from dataclasses import replace

from selfdebug.world.families import FAMILIES, LIST_ENDS, OPS, hidden_constant
from selfdebug.world.generate import Spec, run_spec


def _safe(spec: Spec, x):
    try:
        return ("ok", run_spec(spec, x))
    except Exception as e:  # noqa: BLE001  a mutant may raise (x // 0 is not possible, but be safe)
        return ("raise", type(e).__name__)


def fails_a_test(mutant: Spec, original: Spec, inputs: list) -> bool:
    return any(_safe(mutant, x) != _safe(original, x) for x in inputs)


def _one(spec: Spec, rng: random.Random) -> Spec:
    fam = FAMILIES[spec.family]
    ops = list(spec.ops)
    i = rng.randrange(len(ops))
    name, param = ops[i]
    choice = rng.choice(["param", "op", "op", "swap", "drop", "extra"])
    if choice == "param" and OPS[name].param is not None:
        ops[i] = (name, OPS[name].param(rng))
    elif choice == "swap" and len(ops) > 1:
        ops.reverse()
    elif choice == "drop" and len(ops) > 1 and spec.family != "branch":
        del ops[i]
    else:  # another operation of the family in this step (or a changed reduction)
        if fam.ends and rng.random() < 0.3:
            return replace(spec, end=rng.choice([e for e in fam.ends if e != spec.end]
                                                or list(LIST_ENDS)))
        if spec.family == "branch" and rng.random() < 0.3:
            return replace(spec, threshold=spec.threshold + rng.choice([-2, -1, 1, 2]))
        other = rng.choice([o for o in fam.ops if o != name])
        gen = OPS[other].param
        ops[i] = (other, gen(rng) if gen else None)
    return replace(spec, ops=tuple(ops))


def wrong_constant(spec: Spec, rng: random.Random) -> Spec:
    """``spec`` with another hidden constant (it fails the first test, on the zero)."""
    kind = FAMILIES[spec.family].kind
    while True:
        c = hidden_constant(kind, rng)
        if c != spec.constant:
            return replace(spec, constant=c)


def mutate(spec: Spec, inputs: list, rng: random.Random, tries: int = 20,
           constant: bool = True) -> Spec | None:
    """A spec whose program fails at least one of ``inputs``' tests (None if none found).

    Hidden-constant specs get a wrong constant half of the time: the constant is the one
    thing a model cannot know from the description. ``constant=False``: structural
    mistakes only (the constant stays right).
    """
    fam = FAMILIES[spec.family]
    for _ in range(tries):
        if constant and fam.hidden and rng.random() < 0.5:
            mutant = wrong_constant(spec, rng)
        else:
            mutant = _one(spec, rng)
        if fails_a_test(mutant, spec, inputs):
            return mutant
    return None
