"""The operations and families of the problem world.

A problem is a chain of small operations on one argument (an int ``x``, a string ``s`` or
a list ``xs``), written one statement per operation so that a new *combination* of known
operations is a new program made of known lines. Hidden-constant families end with a step
that adds a constant the description does not give; their first test calls the function
on the operations' zero (``0``, ``''``, ``[]``), whose value is the constant itself, so the
first failing test's feedback carries what the description lacks.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Op:
    name: str
    kind: str  # "int" | "str" | "list": what the argument is
    texts: tuple[str, ...]  # description phrasings; {a} is the parameter
    line: str  # the statement; {v} is the variable, {a} the parameter
    fn: Callable  # (value, param) -> value: the reference semantics
    param: Callable[[random.Random], object] | None = None
    keeps_zero: bool = False  # op(zero) == zero: allowed before a hidden constant


def _small(rng: random.Random) -> int:
    return rng.randint(2, 9)


def _letters(rng: random.Random) -> str:
    return "".join(rng.choice("bcdfghklmnpqrstvwz") for _ in range(2))


def _vowel_pair(rng: random.Random) -> tuple[str, str]:
    a, b = rng.sample("aeiou", 2)
    return (a, b)


INT_OPS = [
    Op("add", "int", ("add {a}", "increase it by {a}"), "{v} = {v} + {a}",
       lambda x, a: x + a, _small),
    Op("sub", "int", ("subtract {a}", "decrease it by {a}"), "{v} = {v} - {a}",
       lambda x, a: x - a, _small),
    Op("mul", "int", ("multiply it by {a}", "scale it by {a}"), "{v} = {v} * {a}",
       lambda x, a: x * a, _small, keeps_zero=True),
    Op("square", "int", ("square it", "multiply it by itself"), "{v} = {v} * {v}",
       lambda x, a: x * x, keeps_zero=True),
    Op("neg", "int", ("negate it", "flip its sign"), "{v} = -{v}",
       lambda x, a: -x, keeps_zero=True),
    Op("mod", "int", ("take it modulo {a}", "keep its remainder after dividing by {a}"),
       "{v} = {v} % {a}", lambda x, a: x % a, _small, keeps_zero=True),
    Op("div", "int", ("divide it by {a}, rounding down", "floor-divide it by {a}"),
       "{v} = {v} // {a}", lambda x, a: x // a, _small, keeps_zero=True),
    Op("abs", "int", ("take its absolute value", "drop its sign"), "{v} = abs({v})",
       lambda x, a: abs(x), keeps_zero=True),
]

STR_OPS = [
    Op("upper", "str", ("convert it to upper case", "make it upper case"),
       "{v} = {v}.upper()", lambda s, a: s.upper(), keeps_zero=True),
    Op("reverse", "str", ("reverse it", "turn it backwards"), "{v} = {v}[::-1]",
       lambda s, a: s[::-1], keeps_zero=True),
    Op("twice", "str", ("repeat it twice", "concatenate it with itself"), "{v} = {v} + {v}",
       lambda s, a: s + s, keeps_zero=True),
    Op("head", "str", ("keep its first {a} characters", "cut it to {a} characters"),
       "{v} = {v}[:{a}]", lambda s, a: s[:a], lambda r: r.randint(2, 5), keeps_zero=True),
    Op("tail", "str", ("drop its first {a} characters", "remove {a} characters from the front"),
       "{v} = {v}[{a}:]", lambda s, a: s[a:], lambda r: r.randint(1, 3), keeps_zero=True),
    Op("append", "str", ("append {a!r}", "add {a!r} at the end"), "{v} = {v} + {a!r}",
       lambda s, a: s + a, _letters),
    Op("prepend", "str", ("prepend {a!r}", "put {a!r} in front"), "{v} = {a!r} + {v}",
       lambda s, a: a + s, _letters),
    Op("replace", "str", ("replace every {a[0]!r} with {a[1]!r}",
                          "change each {a[0]!r} into {a[1]!r}"),
       "{v} = {v}.replace({a[0]!r}, {a[1]!r})", lambda s, a: s.replace(*a), _vowel_pair,
       keeps_zero=True),
]

LIST_OPS = [
    Op("ladd", "list", ("add {a} to every number", "increase each number by {a}"),
       "{v} = [n + {a} for n in {v}]", lambda xs, a: [n + a for n in xs], _small,
       keeps_zero=True),
    Op("lmul", "list", ("multiply every number by {a}", "scale each number by {a}"),
       "{v} = [n * {a} for n in {v}]", lambda xs, a: [n * a for n in xs], _small,
       keeps_zero=True),
    Op("lsquare", "list", ("square every number", "replace each number by its square"),
       "{v} = [n * n for n in {v}]", lambda xs, a: [n * n for n in xs], keeps_zero=True),
    Op("even", "list", ("keep only the even numbers", "drop the odd numbers"),
       "{v} = [n for n in {v} if n % 2 == 0]", lambda xs, a: [n for n in xs if n % 2 == 0],
       keeps_zero=True),
    Op("odd", "list", ("keep only the odd numbers", "drop the even numbers"),
       "{v} = [n for n in {v} if n % 2 == 1]", lambda xs, a: [n for n in xs if n % 2 == 1],
       keeps_zero=True),
    Op("above", "list", ("keep the numbers greater than {a}", "drop the numbers up to {a}"),
       "{v} = [n for n in {v} if n > {a}]", lambda xs, a: [n for n in xs if n > a], _small,
       keeps_zero=True),
    Op("sort", "list", ("sort them", "put them in increasing order"), "{v} = sorted({v})",
       lambda xs, a: sorted(xs), keeps_zero=True),
    Op("rev", "list", ("reverse their order", "turn the list around"), "{v} = {v}[::-1]",
       lambda xs, a: xs[::-1], keeps_zero=True),
]

# Final reductions of the list family (list -> int): also part of the combination.
LIST_ENDS = {
    "sum": ("return the sum", "return sum({v})", lambda xs: sum(xs)),
    "len": ("return how many are left", "return len({v})", lambda xs: len(xs)),
    "list": ("return the list", "return {v}", lambda xs: xs),
}

OPS = {op.name: op for op in INT_OPS + STR_OPS + LIST_OPS}


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # argument kind
    var: str  # argument name
    noun: str  # how descriptions name the argument
    hidden: bool  # ends with a hidden constant
    ops: tuple[str, ...]  # operations it chains
    ends: tuple[str, ...] = ()  # list reductions (list families only)
    zero: object = None  # the argument whose result is the hidden constant


FAMILIES = {f.name: f for f in [
    Family("arith", "int", "x", "the integer x", False, tuple(o.name for o in INT_OPS)),
    Family("text", "str", "s", "the string s", False, tuple(o.name for o in STR_OPS)),
    Family("lists", "list", "xs", "the list of integers xs", False,
           tuple(o.name for o in LIST_OPS), ends=("sum", "len", "list")),
    Family("branch", "int", "x", "the integer x", False, tuple(o.name for o in INT_OPS)),
    Family("arith_hidden", "int", "x", "the integer x", True,
           tuple(o.name for o in INT_OPS if o.keeps_zero), zero=0),
    Family("text_hidden", "str", "s", "the string s", True,
           tuple(o.name for o in STR_OPS if o.keeps_zero), zero=""),
    Family("lists_hidden", "list", "xs", "the list of integers xs", True,
           tuple(o.name for o in LIST_OPS if o.keeps_zero), ends=("sum", "len"), zero=[]),
]}


def random_input(kind: str, rng: random.Random):
    if kind == "int":
        return rng.randint(-9, 20)
    if kind == "str":
        return "".join(rng.choice("abcdeiou") for _ in range(rng.randint(3, 6)))
    return [rng.randint(-5, 12) for _ in range(rng.randint(2, 5))]


def hidden_constant(kind: str, rng: random.Random):
    """One digit or one letter. Why so small: a base model that cannot read feedback yet
    still guesses it now and then (1 in 9 or 18), and those verified lucky repairs are what
    self-bootstrapping starts from; with two digits (1 in 90) three rounds found too few
    to learn from (8 → 64 examples, held-out hidden repair rate stayed 0 %)."""
    return rng.choice(hidden_constants(kind))


def hidden_constants(kind: str) -> list:
    """Every value a hidden constant of ``kind`` can take."""
    return list("bcdfghklmnpqrstvwz") if kind == "str" else list(range(1, 10))
