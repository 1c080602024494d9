"""Framing and value encoding between the trusted side and the sandbox (stdlib only).

Values cross as tagged JSON built from *exact* plain types, so a candidate cannot smuggle an
object with an overridden ``__eq__`` (or an ``int`` subclass) back to the trusted side: what
arrives is rebuilt from scratch with builtin types. Anything else becomes an opaque handle.
The sandbox imports this file by path, so it must not import selfdebug.
"""

from __future__ import annotations

import builtins
import collections
import decimal
import fractions
import json
import math
import os
import struct

MAX_FRAME = 64 << 20
MAX_ITEMS = 2_000_000  # elements in one encoded value


class WireError(Exception):
    pass


class Unencodable(Exception):
    pass


def write_frame(fd: int, obj) -> None:
    data = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    buf = struct.pack("<I", len(data)) + data
    view = memoryview(buf)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("peer closed the channel")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int):
    (size,) = struct.unpack("<I", _read_exact(fd, 4))
    if size > MAX_FRAME:
        raise WireError(f"frame of {size} bytes exceeds the {MAX_FRAME} byte cap")
    try:
        return json.loads(_read_exact(fd, size))
    except ValueError as e:
        raise WireError(f"malformed frame: {e}") from None


def _float(x: float):
    if math.isnan(x):
        return ["f", "nan"]
    if math.isinf(x):
        return ["f", "inf" if x > 0 else "-inf"]
    return ["f", x]


def encode(value, make_ref=None, _budget=None):
    """Plain value -> tagged JSON. Non-plain values go through ``make_ref`` (or raise)."""
    budget = _budget if _budget is not None else [MAX_ITEMS]
    budget[0] -= 1
    if budget[0] < 0:
        raise Unencodable("value too large to return")
    t = type(value)
    if value is None:
        return ["n"]
    if t is bool:
        return ["b", value]
    if t is int:
        # As strings: JSON numbers lose precision in other readers. Huge ints in hex, since
        # decimal conversion past 4300 digits raises.
        return ["i", str(value)] if -10**18 < value < 10**18 else ["x", hex(value)]
    if t is float:
        return _float(value)
    if t is str:
        return ["s", value]
    if t is complex:
        return ["c", _float(value.real), _float(value.imag)]
    if t is bytes:
        return ["y", value.hex()]
    if t is list:
        return ["l", [encode(v, make_ref, budget) for v in value]]
    if t is tuple:
        return ["t", [encode(v, make_ref, budget) for v in value]]
    if t in (set, frozenset):
        items = [encode(v, make_ref, budget) for v in value]
        return ["S" if t is set else "F", items]
    if t in (dict, collections.defaultdict, collections.OrderedDict, collections.Counter):
        tag = {dict: "d", collections.defaultdict: "d",
               collections.OrderedDict: "o", collections.Counter: "C"}[t]
        return [tag, [[encode(k, make_ref, budget), encode(v, make_ref, budget)]
                      for k, v in dict.items(value)]]
    if t is collections.deque:
        return ["q", [encode(v, make_ref, budget) for v in value]]
    if t is decimal.Decimal:
        return ["D", str(value)]
    if t is fractions.Fraction:
        return ["R", str(value)]
    if t is range:
        return ["r", value.start, value.stop, value.step]
    if getattr(builtins, getattr(value, "__name__", ""), None) is value:
        return ["B", value.__name__]  # builtin types/functions passed as arguments (int, len)
    if make_ref is None:
        raise Unencodable(f"cannot send a value of type {t.__name__}")
    return make_ref(value)


def _unfloat(x):
    v = x[1]
    return float(v) if isinstance(v, str) else float(v)


def decode(data, resolve_ref=None):
    """Tagged JSON -> fresh builtin values. ``resolve_ref`` maps ``["h", id, type]``."""
    tag = data[0]
    if tag == "n":
        return None
    if tag == "b":
        return bool(data[1])
    if tag == "i":
        return int(data[1])
    if tag == "x":
        return int(data[1], 16)
    if tag == "f":
        return _unfloat(data)
    if tag == "s":
        return str(data[1])
    if tag == "c":
        return complex(_unfloat(data[1]), _unfloat(data[2]))
    if tag == "y":
        return bytes.fromhex(data[1])
    if tag == "l":
        return [decode(v, resolve_ref) for v in data[1]]
    if tag == "t":
        return tuple(decode(v, resolve_ref) for v in data[1])
    if tag == "S":
        return {decode(v, resolve_ref) for v in data[1]}
    if tag == "F":
        return frozenset(decode(v, resolve_ref) for v in data[1])
    if tag in ("d", "o", "C"):
        pairs = [(decode(k, resolve_ref), decode(v, resolve_ref)) for k, v in data[1]]
        cls = {"d": dict, "o": collections.OrderedDict, "C": collections.Counter}[tag]
        return cls(pairs) if tag != "C" else collections.Counter(dict(pairs))
    if tag == "q":
        return collections.deque(decode(v, resolve_ref) for v in data[1])
    if tag == "D":
        return decimal.Decimal(data[1])
    if tag == "R":
        return fractions.Fraction(data[1])
    if tag == "r":
        return range(int(data[1]), int(data[2]), int(data[3]))
    if tag == "B" and isinstance(getattr(builtins, data[1], None), type | type(len)):
        return getattr(builtins, data[1])
    if tag in ("h", "N") and resolve_ref is not None:
        return resolve_ref(data)
    raise WireError(f"unknown value tag {tag!r}")
