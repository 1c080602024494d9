"""A live candidate program in the sandbox, and proxies that let trusted test code call it.

Benchmark test code (trusted) runs on the trusted side; wherever it touches a name the
candidate defines, it holds a ``RemoteRef``. Calling one ships plain arguments into the
sandbox and brings back a plain value rebuilt from builtin types, so comparisons with the
expected values happen here, with objects the candidate never touched.
"""

from __future__ import annotations

import builtins
import functools
import time

from selfdebug.sandbox import wire
from selfdebug.sandbox.forkserver import ForkServer


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
    """One forked candidate process in ``server`` (call mode)."""

    def __init__(self, server: ForkServer, code: str, setup: str, limits: dict,
                 call_timeout: float, deadline: float):
        self.server, self.code, self.setup, self.limits = server, code, setup, limits
        self.call_timeout = call_timeout
        self.deadline = deadline  # monotonic time after which every call times out
        self.last_call: tuple[str, object] | None = None  # (label, plain result) for feedback
        self.calls = 0

    def start(self, load_timeout: float, then: dict | None = None) -> dict:
        """Load the program (+ setup). Returns the server's reply: loaded/load_error/dead.

        ``then``: a call_many request the child runs right after a successful load; the
        reply carries its first results (``ForkServer.read_stream`` reads them all)."""
        msg = {"op": "start", "code": self.code, "setup": self.setup, "limits": self.limits,
               "timeout": load_timeout}
        wait = load_timeout
        if then is not None:
            msg.update(then=then, then_timeout=self.call_timeout)
            wait += self.call_timeout * min(len(then["inputs"]), 256)
        return self.server.request(msg, wait)

    def _timeout(self) -> float:
        return max(0.05, min(self.call_timeout, self.deadline - time.monotonic()))

    def request(self, req: dict, label: str):
        timeout = self._timeout()
        reply = self.server.request({"op": "req", "req": req, "timeout": timeout}, timeout)
        self.calls += 1
        if "dead" in reply:
            raise SessionDead(reply["dead"])
        resp = reply["resp"]
        if "exc" in resp:
            self.last_call = (label, None)
            raise_remote(resp["exc"])
        value = wire.decode(resp["ok"], lambda d: RemoteRef(self, d, label))
        self.last_call = (label, value)
        return value

    def end(self) -> None:
        if self.server.alive:  # a dead server has no session to end; don't start one here
            # No reply: the server kills and reaps while this side builds the result.
            self.server.send({"op": "end"})


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
