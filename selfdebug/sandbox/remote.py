"""A live candidate program in the sandbox, and proxies that let trusted test code call it.

Benchmark test code (trusted) runs outside the sandbox, in the checker process
(``checker.py``); wherever it touches a name the candidate defines, it holds a
``RemoteRef``. Calling one ships plain arguments into the sandbox (relayed by the judge's
``Session``) and brings back a plain value rebuilt from builtin types, so comparisons with
the expected values happen outside, with objects the candidate never touched.
"""

from __future__ import annotations

import builtins
import functools
import time

from selfdebug.sandbox import wire
from selfdebug.sandbox.forkserver import ForkServer, Worker


class RemoteException(Exception):
    """The candidate raised. Subclasses also derive from the builtin type it raised."""

    info: dict = {}


class SessionDead(Exception):
    """The candidate process ended (timeout, crash, memory, exit) during a request."""

    def __init__(self, info: dict):
        super().__init__(info.get("kind"))
        self.info = info


@functools.cache
def _remote_exc_class(name: str) -> type[RemoteException]:
    base = getattr(builtins, name, None)
    if isinstance(base, type) and issubclass(base, Exception) and base is not RemoteException:
        try:
            return type(name, (base, RemoteException), {})
        except TypeError:  # incompatible layouts
            pass
    return type(name, (RemoteException,), {})


def raise_remote(info: dict):
    cls = _remote_exc_class(str(info.get("type", "Exception")))
    try:
        exc = cls(info.get("msg", ""))
    except TypeError:
        exc = RemoteException(info.get("msg", ""))
    exc.info = info
    raise exc


class Session:
    """One candidate program loaded in its own fresh worker (call mode)."""

    def __init__(self, server: ForkServer, code: str, setup: str, limits: dict,
                 call_timeout: float, deadline: float, hard_deadline: float | None = None):
        self.server, self.code, self.setup, self.limits = server, code, setup, limits
        self.call_timeout = call_timeout
        self.deadline = deadline  # monotonic time after which every call times out
        # the sample's wall deadline: no wait, owed CPU time included, goes past it
        self.hard_deadline = hard_deadline if hard_deadline is not None else deadline
        self.last_call: tuple[str, object] | None = None  # (label, plain result) for feedback
        self.calls = 0
        self.worker: Worker | None = None

    def start(self, load_timeout: float, then: dict | None = None) -> dict:
        """Load the program (+ setup) in a fresh worker. Returns its first reply:
        loaded / load_error / dead. ``then``: a call_many the worker runs right after a
        successful load; ``results`` reads its results."""
        self.end()
        request = {"code": self.code, "setup": self.setup, "limits": self.limits}
        if then is not None:
            request["then"] = then
        worker = self.worker = self.server.spawn("call", request)
        status, reply = worker.read(worker.clock(load_timeout, self.hard_deadline))
        if status != "ok":
            return {"dead": worker.death(status, reply, grace=_EXIT_GRACE)}
        if reply == {"loaded": True}:
            return reply
        if isinstance(reply, dict) and set(reply) == {"load_error"} and isinstance(
                reply["load_error"], dict):
            worker.end()
            return reply
        # a frame the program forged before the harness spoke
        return {"dead": worker.death("protocol", "unexpected frame")}

    def results(self, count: int, limit: float):
        """The ``count`` results of the call_many sent with ``start``, one by one, as
        ``({"resp": r}, seconds)``; a death or a forged frame ends it with one
        ``({"dead": info}, 0.0)``."""
        worker = self.worker
        for _ in range(count):
            if worker is None or worker.ended is not None:
                yield {"dead": {"kind": "dead", "detail": "no session"}}, 0.0
                return
            status, frame = worker.read(worker.clock(limit, self.hard_deadline))
            if status != "ok":
                yield {"dead": worker.death(status, frame, grace=_EXIT_GRACE)}, 0.0
                return
            batch = frame.get("batch") if isinstance(frame, dict) else None
            if not (isinstance(batch, list) and len(batch) == 1 and isinstance(batch[0], dict)):
                yield {"dead": worker.death("protocol", "unexpected frame")}, 0.0
                return
            times = frame.get("times")
            seconds = times[0] if isinstance(times, list) and times and isinstance(
                times[0], float) and times[0] >= 0 else 0.0
            yield {"resp": batch[0]}, seconds

    def _timeout(self) -> float:
        return max(0.05, min(self.call_timeout, self.deadline - time.monotonic()))

    def exchange(self, req: dict) -> dict:
        """One request to the live program and its raw reply (``{"ok": tagged value}`` or
        ``{"exc": info}``), undecoded; SessionDead when the program ends."""
        worker = self.worker
        if worker is None or worker.ended is not None:
            raise SessionDead({"kind": "dead", "detail": "no session"})
        timeout = self._timeout()
        if not worker.send(req, timeout):
            raise SessionDead(worker.death("dead", "closed", grace=_EXIT_GRACE))
        status, resp = worker.read(worker.clock(timeout, self.hard_deadline))
        self.calls += 1
        if status != "ok":
            raise SessionDead(worker.death(status, resp, grace=_EXIT_GRACE))
        if not isinstance(resp, dict):
            raise SessionDead(worker.death("protocol", "unexpected frame"))
        return resp

    def request(self, req: dict, label: str):
        return answer(self, self.exchange(req), label)

    def end(self) -> None:
        if self.worker is not None:
            # No reply: the zygote kills and reaps while this side builds the result.
            self.worker.end()
            self.worker = None


_EXIT_GRACE = 0.2  # a worker that closed its channel gets this long to finish exiting


def answer(session, resp: dict, label: str):
    """A raw reply as the test code sees it: the value (handles become ``RemoteRef`` on
    ``session``), or the candidate's exception raised here. Records ``last_call``."""
    if "exc" in resp:
        session.last_call = (label, None)
        raise_remote(resp["exc"] if isinstance(resp["exc"], dict) else {})
    value = decode_result(resp.get("ok"), lambda d: RemoteRef(session, d, label))
    session.last_call = (label, value)
    return value


def decode_result(data, resolve_ref):
    """A value returned by the sandbox, as plain data. One that cannot be read raises a
    remote ``OutputError`` (the candidate's problem, a verdict like any exception)."""
    try:
        return wire.decode(data, resolve_ref, trusted=True)
    except wire.WireError as e:
        raise_remote({"type": "OutputError", "msg": f"the returned value cannot be read: {e}",
                      "line": None, "frames": []})


def _encode_arg(value):
    def as_ref(v):
        if isinstance(v, RemoteRef):
            return object.__getattribute__(v, "_target")
        raise wire.Unencodable(f"a test passes a {type(v).__name__}, which cannot enter the sandbox")

    return wire.encode(value, as_ref)


def short_repr(v, n: int = 60) -> str:
    s = repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."


def call_label(name: str, args, kwargs: dict) -> str:
    """``name(1, [2, 3], k=4)`` with long values cut: how feedback names a call."""
    shown = [short_repr(a) for a in args] + [f"{k}={short_repr(v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(shown)})"


class RemoteRef:
    """A name or object that lives in the sandbox."""

    __slots__ = ("_session", "_target", "_label")

    def __init__(self, session: Session, target: list, label: str):
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_label", label)

    def _req(self, op: str, label: str, **extra):
        session = object.__getattribute__(self, "_session")
        target = object.__getattribute__(self, "_target")
        return session.request({"op": op, "target": target, **extra}, label)

    def __call__(self, *args, **kwargs):
        label = object.__getattribute__(self, "_label")
        return self._req("call", call_label(label, args, kwargs), args=[_encode_arg(a) for a in args],
                         kwargs={k: _encode_arg(v) for k, v in kwargs.items()})

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        label = object.__getattribute__(self, "_label")
        return self._req("getattr", f"{label}.{name}", attr=name)

    def __getitem__(self, key):
        label = object.__getattribute__(self, "_label")
        return self._req("getitem", f"{label}[{short_repr(key)}]", key=_encode_arg(key))

    def __len__(self):
        return self._req("len", f"len({object.__getattribute__(self, '_label')})")

    def __iter__(self):
        return iter(self._req("list", f"list({object.__getattribute__(self, '_label')})"))

    def __bool__(self):
        return self._req("bool", f"bool({object.__getattribute__(self, '_label')})")

    def __str__(self):
        return self._req("str", f"str({object.__getattribute__(self, '_label')})")

    def __repr__(self):
        target = object.__getattribute__(self, "_target")
        kind = target[2] if target[0] == "h" else target[1]
        return f"<{kind} object>"
