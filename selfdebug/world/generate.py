"""Problems of the world: specs, descriptions, code, tests; the train / held-out split.

A `Spec` is one problem's structure: a family, its chain of operations with their
parameters, a list reduction (list families) and a hidden constant (hidden families).
Its *combination* (family + operation names + reduction, no parameters) decides the
split: held-out problems are combinations that no training problem has, each made of
operations that training problems do use.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field, replace

from selfdebug.world.families import (
    FAMILIES,
    LIST_ENDS,
    OPS,
    Family,
    hidden_constant,
    hidden_constants,
    random_input,
)

ENTRY_POINT = "f"


@dataclass(frozen=True)
class Spec:
    family: str
    ops: tuple[tuple[str, object], ...]  # (op name, parameter or None)
    end: str = ""  # list families: sum | len | list
    threshold: int | None = None  # branch family: "if x > threshold"
    constant: object = None  # hidden families
    phrasing: tuple[int, ...] = ()  # which description text per op (`WorldConfig.phrasings`)

    @property
    def combination(self) -> str:
        names = "+".join(name for name, _ in self.ops)
        return f"{self.family}:{names}" + (f">{self.end}" if self.end else "")


@dataclass
class WorldConfig:
    seed: int = 0
    train_problems: int = 1500
    test_problems: int = 300
    heldout_fraction: float = 0.2  # share of combinations held out
    # share of problems from hidden-constant families: there only feedback tells the
    # constant, so generation-only training cannot gain (the demo's control stays flat)
    hidden_share: float = 0.6
    tests_per_problem: int = 4  # 3..5
    phrasings: int = 1  # description texts per operation (1..2): more is harder to learn
    families: list[str] = field(default_factory=lambda: list(FAMILIES))

    def validate(self) -> None:
        unknown = sorted(set(self.families) - set(FAMILIES))
        if unknown:
            raise ValueError(f"unknown families {unknown}; known: {sorted(FAMILIES)}")
        if not 3 <= self.tests_per_problem <= 5:
            raise ValueError(f"tests_per_problem must be 3..5, got {self.tests_per_problem}")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")
        if self.phrasings not in (1, 2):
            raise ValueError(f"phrasings must be 1 or 2, got {self.phrasings}")
        if self.train_problems < 1 or self.test_problems < 0:
            raise ValueError("train_problems must be ≥ 1 and test_problems ≥ 0")


# ------------------------------------------------------------------ semantics and text
def run_spec(spec: Spec, value):
    """The reference result of ``spec`` on ``value`` (no code is executed)."""
    fam = FAMILIES[spec.family]
    if spec.family == "branch":
        (n1, a1), (n2, a2) = spec.ops
        return OPS[n1].fn(value, a1) if value > spec.threshold else OPS[n2].fn(value, a2)
    for name, param in spec.ops:
        value = OPS[name].fn(value, param)
    if fam.kind == "list":
        value = LIST_ENDS[spec.end][2](value)
    if fam.hidden:
        value = value + spec.constant
    return value


def _op_text(spec: Spec, i: int) -> str:
    name, param = spec.ops[i]
    texts = OPS[name].texts
    return texts[spec.phrasing[i] % len(texts)].format(a=param)


def _op_line(name: str, param, var: str) -> str:
    return OPS[name].line.format(v=var, a=param)


def description(spec: Spec) -> str:
    fam = FAMILIES[spec.family]
    if spec.family == "branch":
        return (f"Take {fam.noun}. If it is greater than {spec.threshold}, "
                f"{_op_text(spec, 0)}; otherwise {_op_text(spec, 1)}. Return the result.")
    steps = [_op_text(spec, i) for i in range(len(spec.ops))]
    text = f"Take {fam.noun}, " + ", then ".join(steps)
    if fam.kind == "list":
        text += ", then " + LIST_ENDS[spec.end][0]
        if fam.hidden:
            text += " plus a hidden constant"
    elif fam.hidden:
        what = "append a hidden suffix" if fam.kind == "str" else "add a hidden constant"
        text += f", then {what}, and return the result"
    else:
        text += ", and return the result"
    return text + "."


def prompt(spec: Spec) -> str:
    fam = FAMILIES[spec.family]
    return f'def {ENTRY_POINT}({fam.var}):\n    """{description(spec)}"""\n'


def code(spec: Spec) -> str:
    fam = FAMILIES[spec.family]
    v = fam.var
    lines = [f"def {ENTRY_POINT}({v}):"]
    if spec.family == "branch":
        (n1, a1), (n2, a2) = spec.ops
        lines += [f"    if {v} > {spec.threshold}:", f"        {_op_line(n1, a1, v)}",
                  "    else:", f"        {_op_line(n2, a2, v)}", f"    return {v}"]
        return "\n".join(lines) + "\n"
    lines += [f"    {_op_line(name, param, v)}" for name, param in spec.ops]
    if fam.kind == "list":
        ret = LIST_ENDS[spec.end][1].format(v=v)
        lines.append(f"    {ret} + {spec.constant!r}" if fam.hidden else f"    {ret}")
    else:
        if fam.hidden:
            lines.append(f"    {v} = {v} + {spec.constant!r}")
        lines.append(f"    return {v}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ combinations
def combinations(family: Family) -> list[str]:
    """Every combination of a family: two different operations (+ a reduction)."""
    out = []
    for a in family.ops:
        for b in family.ops:
            if a == b and family.name != "branch":
                continue
            base = f"{family.name}:{a}+{b}"
            out += [f"{base}>{e}" for e in family.ends] if family.ends else [base]
    return out


def _unit(*parts) -> float:
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_combinations(cfg: WorldConfig) -> dict[str, list[str]]:
    """{"train": [...], "test": [...]} combinations per the seed and held-out fraction.

    Held out per family, so every family has test combinations; a held-out combination
    whose operations no training combination of its family uses goes back to train.
    """
    out: dict[str, list[str]] = {"train": [], "test": []}
    for name in cfg.families:
        combos = sorted(combinations(FAMILIES[name]), key=lambda c: _unit(cfg.seed, c))
        k = max(1, round(len(combos) * cfg.heldout_fraction))
        test, train = combos[:k], combos[k:]
        seen = {op for c in train for op in _combo_ops(c)}
        back = [c for c in test if not set(_combo_ops(c)) <= seen]
        out["train"] += train + back
        out["test"] += [c for c in test if c not in back]
    return out


def _combo_ops(combo: str) -> list[str]:
    body = combo.split(":", 1)[1].split(">")[0]
    return body.split("+")


# ---------------------------------------------------------------------------- problems
def make_spec(combo: str, rng: random.Random, phrasings: int = 1, constant=None) -> Spec:
    """A random spec of ``combo``; hidden families take ``constant`` when given."""
    family, rest = combo.split(":", 1)
    body, _, end = rest.partition(">")
    fam = FAMILIES[family]
    ops = []
    for name in body.split("+"):
        gen = OPS[name].param
        ops.append((name, gen(rng) if gen else None))
    return Spec(family=family, ops=tuple(ops), end=end,
                threshold=rng.randint(0, 9) if family == "branch" else None,
                constant=(constant if constant is not None else hidden_constant(fam.kind, rng))
                if fam.hidden else None,
                phrasing=tuple(rng.randrange(phrasings) for _ in ops))


def test_inputs(spec: Spec, n: int, rng: random.Random) -> list:
    """``n`` distinct inputs; hidden families start with the zero, which reveals the constant."""
    fam = FAMILIES[spec.family]
    inputs = [fam.zero] if fam.hidden else []
    if spec.family == "branch":  # both sides of the branch
        inputs += [spec.threshold + rng.randint(1, 6), spec.threshold - rng.randint(0, 6)]
    tries = 0
    while len(inputs) < n and tries < 1000:
        tries += 1
        x = random_input(fam.kind, rng)
        if x not in inputs:
            inputs.append(x)
    return inputs[:n]


def check_code(spec: Spec, inputs: list) -> str:
    lines = ["def check(candidate):"]
    lines += [f"    assert candidate({x!r}) == {run_spec(spec, x)!r}" for x in inputs]
    return "\n".join(lines) + "\n"


def record(spec: Spec, task_id: str, inputs: list) -> dict:
    """A HumanEval-format record (any stage reads it through `load_problems`)."""
    full = code(spec)
    head = prompt(spec)
    body = full.split("\n", 1)[1]  # the canonical solution is the body after the prompt
    return {"task_id": task_id, "prompt": head, "entry_point": ENTRY_POINT,
            "canonical_solution": body, "test": check_code(spec, inputs),
            "combination": spec.combination, "family": spec.family,
            "hidden": FAMILIES[spec.family].hidden,
            "constant": spec.constant, "inputs": repr(inputs)}


def _family_weights(cfg: WorldConfig) -> dict[str, float]:
    hidden = [f for f in cfg.families if FAMILIES[f].hidden]
    regular = [f for f in cfg.families if not FAMILIES[f].hidden]
    share = cfg.hidden_share if hidden and regular else (1.0 if hidden else 0.0)
    w = {f: share / len(hidden) for f in hidden}
    w.update({f: (1 - share) / len(regular) for f in regular})
    return w


def generate_split(cfg: WorldConfig, split: str, combos: list[str], count: int) -> list[dict]:
    rng = random.Random(f"{cfg.seed}:{split}")
    weights = _family_weights(cfg)
    by_family: dict[str, list[str]] = {}
    for c in combos:
        by_family.setdefault(c.split(":")[0], []).append(c)
    families = [f for f in cfg.families if by_family.get(f)]
    # Hidden constants come from a shuffled deck per family, so within a split every value
    # is equally frequent: with independent draws a split's most frequent constants
    # (seed 1: 47, 38, 33 of 286 for a uniform 32) were a prior that generation-only
    # training learned, and its hidden-family pass rate rose without reading feedback.
    decks: dict[str, list] = {}
    out, seen = [], set()
    while len(out) < count:
        fam = rng.choices(families, weights=[weights[f] for f in families])[0]
        deck = decks.setdefault(fam, [])
        if FAMILIES[fam].hidden and not deck:
            deck += hidden_constants(FAMILIES[fam].kind)
            rng.shuffle(deck)
        spec = make_spec(rng.choice(by_family[fam]), rng, cfg.phrasings,
                         constant=deck[-1] if deck else None)
        inputs = test_inputs(spec, cfg.tests_per_problem, rng)
        key = (code(spec), repr(inputs))
        if key in seen:
            continue
        seen.add(key)
        if deck:
            deck.pop()
        out.append(record(spec, f"world/{split}/{len(out)}", inputs))
        out[-1]["_spec"] = spec  # in memory only (write_jsonl drops it)
    return out


def generate_world(cfg: WorldConfig) -> dict[str, list[dict]]:
    """{"train": records, "test": records}: deterministic for a given config."""
    cfg.validate()
    combos = split_combinations(cfg)
    return {"train": generate_split(cfg, "train", combos["train"], cfg.train_problems),
            "test": generate_split(cfg, "test", combos["test"], cfg.test_problems)}


def spec_of(rec: dict) -> Spec:
    return rec["_spec"]


def with_ops(spec: Spec, ops) -> Spec:
    return replace(spec, ops=tuple(ops))


def problems_of(records: list[dict]):
    """`Problem`s of records, as `load_problems` would read them from the written file."""
    from selfdebug.problems.formats import humaneval

    return [humaneval({k: v for k, v in r.items() if not k.startswith("_")}) for r in records]
