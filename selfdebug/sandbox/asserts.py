"""Assertion tests as (call, check) pairs, so a sample's calls go to the sandbox in one batch.

``assert candidate([1, 2]) == 3`` becomes the call ``candidate([1, 2])`` (literal arguments,
sent as data) and the trusted check ``assert __sd_ret[0] == 3``, evaluated here on the
plain value that came back. A statement qualifies only when this changes nothing the
candidate can observe: literal arguments, the candidate used only as the called name, no
short-circuit or lazy context around a call (``and``/``or``/``if``-expressions, lambdas,
comprehensions) and no other name from the candidate's program. Anything else keeps the
proxy path (``remote.RemoteRef``), one request per operation.

A split check whose shape is a comparison of the one returned value with a literal
(``== lit``, ``!= lit``, ``< lit`` ..., ``is None``, ``abs(ret - lit) < tol``, ``ret``,
``not ret``) also gets a ``FastCheck``: the judge may evaluate it itself on a returned value
that is plain and small (``fastpath.py``), since its work is then bounded by construction;
every other check runs in the checker process.
"""

from __future__ import annotations

import ast
import builtins
import operator
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
    fast: FastCheck | None = None  # the check's shape, when the judge may evaluate it


# the comparisons a FastCheck may make (Python's own operators, so the same results and
# the same exception messages as the check's code)
_OPS = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
        ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Is: operator.is_,
        ast.IsNot: operator.is_not}
_SINGLETONS = (None, True, False)  # ``is`` with other literals depends on the interpreter


@dataclass(frozen=True)
class FastCheck:
    """A check of a statement with one call, by shape: ``kind`` is
    "const" (``assert <literal>``, no call), "truth" (``assert ret``), "not", "cmp"
    (``ret <op> literal`` or ``literal <op> ret``) or "close" (``abs(ret - a) <op> tol`` or
    ``abs(a - ret) <op> tol``). ``ret_left``: the returned value is the left operand."""

    kind: str
    op: object = None  # operator function ("cmp", "close")
    literal: object = None  # the compared literal ("const", "cmp"), ``a`` ("close")
    ret_left: bool = True
    tol: object = None  # ("close")

    def holds(self, ret) -> bool:
        """The check's truth on ``ret``; raises what the check's own code would."""
        if self.kind == "const":
            return bool(self.literal)
        if self.kind == "truth":
            return bool(ret)
        if self.kind == "not":
            return not ret
        if self.kind == "cmp":
            pair = (ret, self.literal) if self.ret_left else (self.literal, ret)
            return bool(self.op(*pair))
        diff = ret - self.literal if self.ret_left else self.literal - ret
        return bool(self.op(abs(diff), self.tol))


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


def _literal(node: ast.expr) -> tuple[bool, object]:
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def _is_ret(node: ast.expr) -> bool:
    return (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
            and node.value.id == RESULTS and isinstance(node.slice, ast.Constant)
            and node.slice.value == 0)


def fast_shape(test: ast.expr, msg: ast.expr | None, n_calls: int,
               shadowed: set[str]) -> FastCheck | None:
    """The FastCheck of a rewritten check (``test``: RESULTS[0] stands for the call), or
    None when its shape is not one whose work is bounded by the values it compares."""
    if msg is not None and not isinstance(msg, ast.Constant):
        return None  # a message is evaluated on failure: only a constant is known harmless
    if n_calls == 0:
        ok, value = _literal(test)
        return FastCheck("const", literal=value) if ok else None
    if n_calls != 1:
        return None
    if _is_ret(test):
        return FastCheck("truth")
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not) and _is_ret(test.operand):
        return FastCheck("not")
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return None
    op, left, right = _OPS.get(type(test.ops[0])), test.left, test.comparators[0]
    if op is None:
        return None
    if _is_ret(left) != _is_ret(right):
        ok, value = _literal(right if _is_ret(left) else left)
        if not ok or (op in (operator.is_, operator.is_not)
                      and not any(value is s for s in _SINGLETONS)):
            return None
        return FastCheck("cmp", op, value, _is_ret(left))
    # abs(ret - a) < tol, abs(a - ret) <= tol (``abs`` the builtin)
    ok, tol = _literal(right)
    if not (ok and op in (operator.lt, operator.le) and isinstance(left, ast.Call)
            and isinstance(left.func, ast.Name) and left.func.id == "abs"
            and "abs" not in shadowed and len(left.args) == 1 and not left.keywords):
        return None
    diff = left.args[0]
    if not (isinstance(diff, ast.BinOp) and isinstance(diff.op, ast.Sub)
            and _is_ret(diff.left) != _is_ret(diff.right)):
        return None
    ok, a = _literal(diff.right if _is_ret(diff.left) else diff.left)
    return FastCheck("close", op, a, _is_ret(diff.left), tol) if ok else None


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
    with warnings.catch_warnings():  # "is" with a literal: the benchmark's own style
        warnings.simplefilter("ignore", SyntaxWarning)
        check = compile(rewritten, f"<test {index}>", "exec")
    return SplitAssert(extract.calls, extract.labels, check,
                       fast_shape(test, stmt.msg, len(extract.calls), test_names | forbidden))
