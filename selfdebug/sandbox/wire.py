"""Framing and value encoding between the trusted side and the sandbox (stdlib only).

Values cross as tagged JSON built from *exact* plain types, so a candidate cannot smuggle an
object with an overridden ``__eq__`` (or an ``int`` subclass) back to the trusted side: what
arrives is rebuilt from scratch with builtin types. Anything else becomes an opaque handle.
What comes back from the sandbox is plain data only, capped in items, depth and integer
size: a returned ``range`` is accepted only as long as the list it stands for would be
(so ``set()`` or ``sum()`` on it is bounded work), a returned builtin function arrives as a
handle (never the trusted side's own ``open``).
The sandbox imports this file by path, so it must not import selfdebug.
"""

from __future__ import annotations

import array
import builtins
import collections
import decimal
import fractions
import json
import math
import os
import socket
import struct

MAX_FRAME = 64 << 20
MAX_ITEMS = 2_000_000  # elements in one encoded value
MAX_DEPTH = 100  # nesting of one value (JSON decoding recurses per level)
MAX_INT_BITS = 1 << 22  # about 1.26 million decimal digits
# Elements of one set (keys of one dict) with the same hash, on the trusted side: each costs
# a comparison with all the others, so building a set of n of them is quadratic (ints and
# tuples hash predictably: k * (2**61 - 1) all hash to 0), and a forged frame is cheap.
MAX_EQUAL_HASHES = 64


class WireError(Exception):
    pass


class Unencodable(Exception):
    pass


def rights(fds) -> list:
    """``sendmsg``'s ancillary data passing ``fds`` (``SCM_RIGHTS``); none for no fds."""
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []


def received_fds(ancdata) -> list[int]:
    """The file descriptors an ``SCM_RIGHTS`` control message brought (``recvmsg``'s
    ancillary data); a truncated trailing entry is ignored."""
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            got = array.array("i")
            got.frombytes(payload[: len(payload) - len(payload) % got.itemsize])
            fds += list(got)
    return fds


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
    return parse(_read_exact(fd, size))


def parse(data: bytes):
    """A frame's JSON body; anything unreadable (including nesting too deep for the
    decoder) is a WireError."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise WireError(f"malformed frame: {str(e)[:200]}") from None


def dumps_frame(obj) -> bytes:
    data = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    return struct.pack("<I", len(data)) + data


def loads_frame(buf: bytes):
    """One whole frame (header + body) held in memory."""
    if len(buf) < 4:
        raise WireError("truncated frame")
    (size,) = struct.unpack("<I", buf[:4])
    if size > MAX_FRAME or len(buf) != 4 + size:
        raise WireError(f"frame of {size} bytes does not match its {len(buf) - 4} bytes")
    return parse(buf[4:])


class FrameReader:
    """Frames from a non-blocking fd, read in linear time (a bytearray consumed from the
    front, never ``bytes +=``)."""

    def __init__(self, fd: int, header: str = "<I", cap: int = MAX_FRAME):
        self.fd = fd
        self.buf = bytearray()
        self.last_size = 0
        self.header, self.head, self.cap = header, struct.calcsize(header), cap

    def frame(self):
        """The next complete frame's body as bytes, or None when more input is needed."""
        head = self.head
        if len(self.buf) < head:
            return None
        (size,) = struct.unpack_from(self.header, self.buf)
        if size > self.cap:
            raise WireError(f"frame of {size} bytes exceeds the {self.cap} byte cap")
        if len(self.buf) < head + size:
            return None
        data = bytes(self.buf[head:head + size])
        del self.buf[:head + size]
        self.last_size = size
        return data

    def fill(self) -> bool:
        """Read what is there; False at end of input."""
        try:
            chunk = os.read(self.fd, 1 << 20)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        self.buf += chunk
        return True


def _float(x: float):
    if math.isnan(x):
        return ["f", "nan"]
    if math.isinf(x):
        return ["f", "inf" if x > 0 else "-inf"]
    return ["f", x]


def encode(value, make_ref=None, _budget=None, *, returning: bool = False, _depth: int = 0):
    """Plain value -> tagged JSON. Non-plain values go through ``make_ref`` (or raise).
    ``returning``: a value on its way back to the trusted side (ranges as lists, builtin
    functions as handles)."""
    budget = _budget if _budget is not None else [MAX_ITEMS]
    budget[0] -= 1
    if budget[0] < 0:
        raise Unencodable(f"value too large to return (over {MAX_ITEMS} items)")
    if _depth > MAX_DEPTH:
        raise Unencodable(f"value nested too deeply (over {MAX_DEPTH} levels)")
    t = type(value)

    def enc(v):
        return encode(v, make_ref, budget, returning=returning, _depth=_depth + 1)

    if value is None:
        return ["n"]
    if t is bool:
        return ["b", value]
    if t is int:
        if value.bit_length() > MAX_INT_BITS:
            raise Unencodable(f"integer too large to return (over {MAX_INT_BITS} bits)")
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
        return ["l", [enc(v) for v in value]]
    if t is tuple:
        return ["t", [enc(v) for v in value]]
    if t in (set, frozenset):
        items = [enc(v) for v in value]
        return ["S" if t is set else "F", items]
    if t in (dict, collections.defaultdict, collections.OrderedDict, collections.Counter):
        tag = {dict: "d", collections.defaultdict: "d",
               collections.OrderedDict: "o", collections.Counter: "C"}[t]
        return [tag, [[enc(k), enc(v)]
                      for k, v in dict.items(value)]]
    if t is collections.deque:
        return ["q", [enc(v) for v in value]]
    if t is decimal.Decimal:
        return ["D", str(value)]
    if t is fractions.Fraction:
        return ["R", str(value)]
    if t is range:
        if returning:  # counted as the list it stands for (what set()/sum() would walk)
            budget[0] -= len(value)
            if budget[0] < 0:
                raise Unencodable(f"value too large to return (over {MAX_ITEMS} items)")
        return ["r", str(value.start), str(value.stop), str(value.step)]
    if not returning and getattr(builtins, getattr(value, "__name__", ""), None) is value:
        return ["B", value.__name__]  # builtin types/functions passed as arguments (int, len)
    if make_ref is None:
        raise Unencodable(f"cannot send a value of type {t.__name__}")
    return make_ref(value)


def _unfloat(x):
    v = x[1]
    return float(v) if isinstance(v, str) else float(v)


def decode(data, resolve_ref=None, *, trusted: bool = False, _depth: int = 0):
    """Tagged JSON -> fresh builtin values. ``resolve_ref`` maps ``["h", id, type]``.
    ``trusted``: decoding on the trusted side, where only plain data is accepted (no
    ranges, no builtins). Anything malformed raises WireError."""
    try:
        return _decode(data, resolve_ref, trusted, _depth)
    except WireError:
        raise
    except (TypeError, ValueError, IndexError, KeyError, AttributeError, OverflowError,
            RecursionError, decimal.InvalidOperation, ZeroDivisionError) as e:
        raise WireError(f"unreadable value: {type(e).__name__}: {str(e)[:200]}") from None


def _spread(keys: list, trusted: bool) -> list:
    """``keys`` for a set or dict, refused on the trusted side when too many share a hash
    (linear: the hashes of distinct hash values are distinct). Unhashable keys raise
    TypeError, as building the set would."""
    if trusted and len(keys) > MAX_EQUAL_HASHES:
        worst = max(collections.Counter(map(hash, keys)).values())
        if worst > MAX_EQUAL_HASHES:
            raise WireError(f"{worst} elements of one set or dict have the same hash "
                            f"(over {MAX_EQUAL_HASHES})")
    return keys


def _decode(data, resolve_ref, trusted: bool, depth: int):
    if depth > MAX_DEPTH + 1:
        raise WireError(f"value nested too deeply (over {MAX_DEPTH} levels)")
    if not isinstance(data, list) or not data:
        raise WireError("malformed value")

    def dec(v):
        return _decode(v, resolve_ref, trusted, depth + 1)

    tag = data[0]
    if tag == "n":
        return None
    if tag == "b":
        return bool(data[1])
    if tag == "i":
        if len(data[1]) > 40:
            raise WireError("malformed integer")
        return int(data[1])
    if tag == "x":
        if len(data[1]) > MAX_INT_BITS // 4 + 3:
            raise WireError("integer too large")
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
        return [dec(v) for v in data[1]]
    if tag == "t":
        return tuple(dec(v) for v in data[1])
    if tag == "S":
        return set(_spread([dec(v) for v in data[1]], trusted))
    if tag == "F":
        return frozenset(_spread([dec(v) for v in data[1]], trusted))
    if tag in ("d", "o", "C"):
        pairs = [(dec(k), dec(v)) for k, v in data[1]]
        _spread([k for k, _ in pairs], trusted)
        cls = {"d": dict, "o": collections.OrderedDict, "C": collections.Counter}[tag]
        return cls(pairs) if tag != "C" else collections.Counter(dict(pairs))
    if tag == "q":
        return collections.deque(dec(v) for v in data[1])
    if tag == "D":
        if len(data[1]) > 10_000:
            raise WireError("decimal too long")
        return decimal.Decimal(data[1])
    if tag == "R":
        if len(data[1]) > 10_000:
            raise WireError("fraction too long")
        return fractions.Fraction(data[1])
    if tag == "r":
        r = range(int(data[1]), int(data[2]), int(data[3]))
        if trusted and len(r) > MAX_ITEMS:  # bounded like a list: never an unbounded range
            raise WireError(f"range of {len(r)} items (over {MAX_ITEMS})")
        return r
    if tag == "B" and not trusted and isinstance(getattr(builtins, data[1], None), type | type(len)):
        return getattr(builtins, data[1])
    if tag in ("h", "N") and resolve_ref is not None:
        return resolve_ref(data)
    raise WireError(f"unknown value tag {tag!r}")
