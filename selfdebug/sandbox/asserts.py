"""Assertion tests as (call, check) pairs, so a sample's calls go to the sandbox in one batch.

``assert candidate([1, 2]) == 3`` becomes the call ``candidate([1, 2])`` (literal arguments,
sent as data) and the trusted check ``assert __sd_ret[0] == 3``, evaluated here on the
plain value that came back. A statement qualifies only when this changes nothing the
candidate can observe: literal arguments, the candidate used only as the called name, no
short-circuit or lazy context around a call (``and``/``or``/``if``-expressions, lambdas,
comprehensions) and no other name from the candidate's program. Anything else keeps the
proxy path (``remote.RemoteRef``), one request per operation.
"""

from __future__ import annotations

import ast
import builtins
import warnings
from dataclasses import dataclass

from selfdebug.sandbox import wire
from selfdebug.sandbox.remote import call_label

RESULTS = "__sd_ret"
_LAZY = (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.IfExp,
         ast.BoolOp, ast.NamedExpr, ast.Await, ast.Yield, ast.YieldFrom)


@dataclass
class SplitAssert:
    calls: list[tuple[list, dict]]  # wire-encoded (args, kwargs) per call, in evaluation order
    labels: list[str]  # "entry(1, 2)", as the proxy path would name the call in feedback
    check: object  # code object; reads RESULTS


_STATIC = (ast.Constant, ast.List, ast.Tuple, ast.Set, ast.Dict, ast.BinOp, ast.UnaryOp,
           ast.operator, ast.unaryop, ast.Load, ast.Name, ast.Call, ast.keyword)


_PURE_CALLS = {"list", "tuple", "set", "frozenset", "dict", "range", "int", "float", "str",
               "bool", "complex", "bytes", "sorted", "reversed", "abs", "min", "max", "sum",
               "len", "round", "pow", "divmod", "chr", "ord"}


def _static_value(node: ast.expr, shadowed: set[str]):
    """The value of an argument made of literals, operators, builtin names and pure builtin
    calls (``3 * 19``, ``1.0/3``, ``int``, ``list(range(5))``); ValueError otherwise."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        pass
    for n in ast.walk(node):
        if not isinstance(n, _STATIC):
            raise ValueError("not a static value")
        if isinstance(n, ast.Name) and (n.id in shadowed or not hasattr(builtins, n.id)):
            raise ValueError(f"{n.id} is not a builtin here")
        if isinstance(n, ast.Call) and not (isinstance(n.func, ast.Name)
                                            and n.func.id in _PURE_CALLS):
            raise ValueError("not a pure builtin call")
    return eval(compile(ast.Expression(node), "<test argument>", "eval"),
                {"__builtins__": builtins})


class _Extract(ast.NodeTransformer):
    def __init__(self, callee: set[str], label: str, shadowed: set[str]):
        self.callee, self.label, self.shadowed = callee, label, shadowed
        self.calls: list[tuple[list, dict]] = []
        self.labels: list[str] = []

    def visit_Call(self, node: ast.Call):
        node = self.generic_visit(node)  # inner calls first: Python evaluates them first
        if not (isinstance(node.func, ast.Name) and node.func.id in self.callee):
            return node
        if any(k.arg is None for k in node.keywords):
            raise ValueError("**kwargs")
        args = [_static_value(a, self.shadowed) for a in node.args]  # Starred and names raise ValueError
        kwargs = {k.arg: _static_value(k.value, self.shadowed) for k in node.keywords}
        self.calls.append(([wire.encode(a) for a in args],
                           {k: wire.encode(v) for k, v in kwargs.items()}))
        self.labels.append(call_label(self.label, args, kwargs))
        index = ast.Constant(len(self.calls) - 1)
        return ast.copy_location(
            ast.Subscript(ast.Name(RESULTS, ast.Load()), index, ast.Load()), node)


def split_assert(text: str, callee: set[str], label: str, program_names: set[str],
                 test_names: set[str], index: int) -> SplitAssert | None:
    """The call/check split of one test statement, or None when it does not qualify.
    ``program_names``: names the candidate's program provides; ``test_names``: names the
    tests' own prelude defines (they shadow builtins)."""
    with warnings.catch_warnings():  # benchmark tests with "\w" in plain strings
        warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
        tree = ast.parse(text)
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return None
    stmt = tree.body[0]
    forbidden = callee | program_names
    for node in ast.walk(stmt):
        if isinstance(node, _LAZY) and any(
                isinstance(n, ast.Name) and n.id in forbidden for n in ast.walk(node)):
            return None
    if stmt.msg is not None and any(isinstance(n, ast.Name) and n.id in forbidden
                                    for n in ast.walk(stmt.msg)):
        return None
    extract = _Extract(callee, label, test_names | forbidden)
    try:
        test = extract.visit(stmt.test)
    except Exception:  # noqa: BLE001  an argument that is not static or cannot be sent
        return None
    rewritten = ast.Module([ast.Assert(test, stmt.msg)], [])
    if any(isinstance(n, ast.Name) and n.id in forbidden for n in ast.walk(rewritten)):
        return None  # the candidate is used other than by being called (passed, compared...)
    ast.fix_missing_locations(rewritten)
    return SplitAssert(extract.calls, extract.labels,
                       compile(rewritten, f"<test {index}>", "exec"))
