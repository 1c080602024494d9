"""MBPP+ test inputs as EvalPlus deserialises them from JSON, per task.

JSON has no tuples, sets or complex numbers, so EvalPlus' MBPP+ release stores them as lists
and strings, and its loader (``evalplus.data.mbpp.mbpp_deserialize_inputs``, v0.3.1 =
github.com/evalplus/evalplus HEAD) rebuilds them task by task with the table below. A
program is judged on the rebuilt values (``(1, 2)`` hashes, ``[1, 2]`` does not), so the
same table is applied here, case for case. HumanEval+ inputs need no rebuilding.
"""

from __future__ import annotations

# task number -> how its inputs are rebuilt; every number is one of EvalPlus' own cases
_ARGS_TUPLES = {2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596,
                616, 630, 726, 740, 744, 809}
_ARGS_LISTS_OF_TUPLES = {63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780}
_FIRST_LIST_OF_TUPLES = {75, 413, 444, 753}
_SECOND_TUPLE = {106, 750}
_FIRST_TUPLE = {250, 405, 446, 617, 720, 763, 808}
_ARGS_TUPLES_OF_TUPLES = {259, 401, 445}
_ALL_TUPLES = {580, 615, 791}


def _all_tuples(x):
    return tuple(_all_tuples(i) for i in x) if isinstance(x, list) else x


def _rebuild(number: int, inp: list):
    """One input (the argument list) of task ``Mbpp/number``."""
    if number in _ARGS_TUPLES:
        return [tuple(a) for a in inp]
    if number in _ARGS_LISTS_OF_TUPLES:
        return [[tuple(x) for x in a] for a in inp]
    if number in _FIRST_LIST_OF_TUPLES:
        return [[tuple(x) for x in inp[0]], inp[1]]
    if number in _SECOND_TUPLE:
        return [inp[0], tuple(inp[1])]
    if number == 115:  # a list of sets; an empty list stands for {} (a dict, as EvalPlus has it)
        return [[set(x) if isinstance(x, list) and len(x) else {} for x in inp[0]]]
    if number == 124:  # (float, complex-as-string); EvalPlus makes it a tuple of arguments
        return (float(inp[0]), complex(inp[1]))
    if number in _FIRST_TUPLE:
        return [tuple(inp[0]), inp[1]]
    if number in _ARGS_TUPLES_OF_TUPLES:
        return [tuple(tuple(x) for x in a) for a in inp]
    if number == 278:
        return [tuple(tuple(x) if isinstance(x, list) else x for x in inp[0])]
    if number == 307:
        return [tuple(inp[0]), inp[1], inp[2]]
    if number == 722:
        return [{k: tuple(v) for k, v in inp[0].items()}, *inp[1:]]
    if number == 252:  # a complex number as a string
        return [complex(inp[0])]
    if number in _ALL_TUPLES:  # every list at any depth, the argument list included
        return _all_tuples(inp)
    return inp


def mbpp_deserialize_inputs(task_id: str, inputs: list) -> list:
    """The inputs of an MBPP+ task (``Mbpp/N``) as EvalPlus passes them to the program."""
    number = int(str(task_id).split("/")[-1])
    return [_rebuild(number, inp) for inp in inputs]
