"""The checker: the benchmark's own test code, run in a separate, bounded process.

Assertion tests are trusted code, but what they do with a value the candidate returned is
not bounded by anything the candidate's worker obeys: ``2 ** f(x)``, ``[0] * f(x)`` or a
recursive helper fed ``f(x) == 10**12`` would stall, exhaust or crash the process that
holds every other sample's verdict. So the judge never executes test code itself. One
checker process per judge runs it: a plain interpreter started with ``exec`` (it never
holds candidate code — only the tests and the plain values the wire rebuilt), with its
address space capped, killed when one statement's check outlasts its time limit or the
sample's wall deadline, and restarted for the next. The judge reads outcomes from it; the
candidate's names in the test code are proxies whose requests the checker relays through
the judge to the candidate's live worker (``remote.Session``).

Protocol (pickled frames on two pipes; both ends are trusted):
judge -> checker: ``("task", key, problem)`` once per task, ``("begin", key, limit)`` per
sample (a fresh test namespace), ``("batch", items, stop_first)`` (checks of batched
statements: ``(index, raw replies, labels)``) or ``("stmt", index)`` (one statement through
proxies), and ``("resp", reply)`` / ``("dead", info)`` answering a relayed request.
checker -> judge: ``("remote", request)``, ``("done", index, outcome, note)``, ``("end",)``
after a batch.
"""

from __future__ import annotations

import collections
import ctypes
import os
import pickle
import resource
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

from selfdebug.sandbox import feedback as fb
from selfdebug.sandbox import wire
from selfdebug.sandbox.forkserver import kill_and_reap

MAX_TASKS = 512  # prepared test suites the checker keeps (LRU)
START_TIMEOUT = 60.0
# A check under way at the sample's wall deadline gets this long to finish (its requests to
# the candidate then time out at once, as on the judge's own paths).
PAST_DEADLINE = 0.5


def _until(limit: float, hard: float) -> float:
    now = time.monotonic()
    return min(now + limit, max(hard, now + PAST_DEADLINE))


class CheckerGone(Exception):
    """The checker process overran its limit or died; ``note`` says how."""


def _frame(obj) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return struct.pack("<Q", len(data)) + data


# ------------------------------------------------------------------ the judge's handle
class Checker:
    """The judge's handle on its checker process (started on first use, restarted after
    an overrun or a crash). Not thread-safe: one judge, one sample at a time."""

    def __init__(self, memory_mb: int):
        self.memory_mb = memory_mb
        self.proc: subprocess.Popen | None = None
        self.to_fd = self.from_fd = -1
        self.reader: wire.FrameReader | None = None
        self.tasks: set[str] = set()
        self.current: tuple | None = None  # (key, problem, limit) of the sample under way
        self.begun = False  # the checker has a fresh namespace for the current sample
        self.last: tuple[str, dict] = ("", {})  # the last relayed call: (label, raw reply)
        self.starts = 0

    # -------------------------------------------------------------- process
    def _start(self) -> None:
        self.close()
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        root = str(Path(__file__).resolve().parents[2])  # the tree holding selfdebug
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
               "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "selfdebug.sandbox.checker", str(to_r), str(from_w),
                 str(self.memory_mb)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env=env, pass_fds=(to_r, from_w))
        finally:
            os.close(to_r)
            os.close(from_w)
        self.to_fd, self.from_fd = to_w, from_r
        os.set_blocking(self.to_fd, False)
        os.set_blocking(self.from_fd, False)
        self.reader = wire.FrameReader(self.from_fd, header="<Q", cap=1 << 40)
        self.tasks = set()
        self.starts += 1
        try:  # not a verdict: a checker that cannot start is our failure, reported as one
            msg = self._recv(time.monotonic() + START_TIMEOUT)
        except CheckerGone as e:
            msg = str(e)
        if msg != ("ready",):
            self.close()
            raise RuntimeError(f"the test checker process did not start: {msg}")

    def close(self) -> None:
        if self.proc is not None:
            kill_and_reap(self.proc)
            self.proc = None
        for fd in (self.to_fd, self.from_fd):
            if fd >= 0:
                os.close(fd)
        self.to_fd = self.from_fd = -1
        self.tasks = set()

    def __del__(self):
        self.close()

    def _gone(self, why: str) -> CheckerGone:
        """Kill the checker; the next message starts a fresh one."""
        code = None
        if self.proc is not None:
            self.proc.kill()
            try:
                code = self.proc.wait(timeout=10)
            except subprocess.SubprocessError:
                pass
        self.close()
        if why == "crashed" and code is not None and code < 0:
            why = f"crashed (signal {-code})"
        elif why == "crashed" and code:
            why = f"exited (code {code})"
        return CheckerGone(why)

    def _send(self, obj, deadline: float) -> None:
        view = memoryview(_frame(obj))
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._gone("did not take the next message in time")
            _, ready, _ = select.select([], [self.to_fd], [], left)
            if not ready:
                continue
            try:
                view = view[os.write(self.to_fd, view):]
            except BlockingIOError:
                continue
            except OSError:
                raise self._gone("crashed") from None

    def _recv(self, deadline: float):
        """The checker's next message; CheckerGone at ``deadline`` or when it died."""
        while True:
            data = self.reader.frame()
            if data is not None:
                return pickle.loads(data)
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._gone("overran")
            ready, _, _ = select.select([self.from_fd], [], [], left)
            if ready and not self.reader.fill():
                raise self._gone("crashed")

    # -------------------------------------------------------------- conversation
    def begin(self, key: str, problem, limit: float) -> None:
        """A new sample of ``problem``: its tests get a fresh namespace."""
        self.current = (key, problem, limit)
        self.begun = False
        self.last = ("", {})

    def _ensure(self) -> None:
        """A live checker that knows the task and has begun the sample (again, after a
        restart: a fresh namespace)."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
            self.begun = False
        key, problem, limit = self.current
        deadline = time.monotonic() + START_TIMEOUT
        if key not in self.tasks:
            self._send(("task", key, problem), deadline)
            self.tasks.add(key)
        if not self.begun:
            self._send(("begin", key, limit), deadline)
            self.begun = True

    def _converse(self, msg, session, limit: float, hard: float):
        """Send ``msg``; yield the checker's ``done``/``end`` messages, relaying its
        requests to the candidate's ``session`` on the way. ``limit``: the most one
        statement's own work may take (the candidate's time on relayed requests is not
        counted); nothing waits more than PAST_DEADLINE past ``hard``."""
        from selfdebug.sandbox.remote import SessionDead

        self._ensure()
        self._send(msg, _until(limit, hard))
        while True:
            reply = self._recv(_until(limit, hard))
            if reply[0] != "remote":
                yield reply
                if reply[0] == "end" or msg[0] == "stmt":
                    return
                continue
            try:
                answer = ("resp", session.exchange(reply[1]))
                self.last = (reply[2], answer[1])
            except SessionDead as d:
                answer = ("dead", d.info)
            except BaseException:
                self.close()  # ServerDied and the like: the judge retries the sample
                raise
            self._send(answer, _until(limit, hard))

    def batch(self, items: list, session, limit: float, hard: float, stop_first: bool):
        """Outcomes of batched statements' checks, ``(index, outcome, note)`` in order.
        ``items``: ``(index, raw replies, labels)``. It ends early after a failure
        (``stop_first``), after a check that killed the session (its note ends in
        " [dead]"), and after a check that overran or crashed the checker (that statement
        fails; the caller sends the rest again)."""
        pending = collections.deque(items)
        try:
            for reply in self._converse(("batch", items, stop_first), session, limit, hard):
                if reply[0] == "done":
                    pending.popleft()
                    yield reply[1:]
        except CheckerGone as e:
            if pending:
                i, resps, labels = pending[0]
                last = (labels[-1], resps[-1]) if labels and resps else self.last
                yield i, "fail", self._overrun_note(i, e, limit, *last)

    def statement(self, index: int, session, limit: float, hard: float) -> tuple[str, str]:
        """The outcome of one statement run through proxies: ``(outcome, note)``."""
        self.last = ("", {})
        try:
            for reply in self._converse(("stmt", index), session, limit, hard):
                return reply[2], reply[3]
        except CheckerGone as e:
            return "fail", self._overrun_note(index, e, limit, *self.last)
        return "error", "the test checker ended the statement without a verdict"


    def _overrun_note(self, index: int, gone: CheckerGone, limit: float, label: str,
                      resp: dict) -> str:
        """Feedback for a statement whose check the checker could not finish."""
        problem = self.current[1]
        what = f"did not finish within {limit:g} s" if str(gone) == "overran" else str(gone)
        note = (f"`{fb.statement_text(problem.tests.asserts[index], problem.entry_point)}`: "
                f"the test's own check {what} on the value the program returned")
        if label and isinstance(resp, dict) and "ok" in resp:
            try:  # bounded: the wire caps what came back
                value = wire.decode(resp["ok"], _Handle, trusted=True)
                note += f" ({label} returned {fb.show(value)})"
            except wire.WireError:
                pass
        return note


class _Handle:
    def __init__(self, d):
        self.kind = d[2] if len(d) > 2 else "object"

    def __repr__(self):
        return f"<{self.kind} object>"


# ------------------------------------------------------------------ the checker process
class _Relay:
    """The candidate's live program as the test code in the checker sees it: requests go
    to the judge, which forwards them to the worker."""

    def __init__(self, conn: _Conn):
        self.conn = conn
        self.last_call: tuple[str, object] | None = None

    def request(self, req: dict, label: str):
        from selfdebug.sandbox.remote import SessionDead, answer

        self.conn.send(("remote", req, label))
        reply = self.conn.recv()
        if reply[0] == "dead":
            raise SessionDead(reply[1])
        return answer(self, reply[1], label)


class _Conn:
    def __init__(self, rfd: int, wfd: int):
        self.r = os.fdopen(rfd, "rb", buffering=1 << 16)
        self.w = os.fdopen(wfd, "wb", buffering=0)

    def send(self, obj) -> None:
        self.w.write(_frame(obj))

    def recv(self):
        head = self.r.read(8)
        if len(head) < 8:
            raise EOFError
        (size,) = struct.unpack("<Q", head)
        return pickle.loads(self.r.read(size))


def _exec_statement(compiled, ns, relay, stmt, ep, limit) -> tuple[str, str]:
    from selfdebug.sandbox.remote import RemoteException, SessionDead

    def text():  # rendered only for a failure's feedback
        return fb.statement_text(stmt, ep)

    try:
        exec(compiled, ns)
        return "pass", ""
    except SessionDead as d:
        outcome = fb.death_outcome(d.info)
        return outcome, f"`{text()}`: {fb.describe_death(d.info, limit)} [dead]"
    except RemoteException as e:
        info = e.info
        outcome = "memory" if info.get("type") == "MemoryError" else "error"
        return outcome, f"`{text()}` raised {fb.describe_exception(info)}"
    except AssertionError:
        return "fail", fb.check_failed(text(), relay.last_call)
    except Exception as e:  # noqa: BLE001  (a MemoryError of the test's own, too)
        return "fail", fb.check_choked(text(), e, relay.last_call)


def _check_batched(prep, i, resps, labels, ns, relay, stmt, ep, limit) -> tuple[str, str]:
    from selfdebug.sandbox.asserts import RESULTS
    from selfdebug.sandbox.remote import RemoteException, RemoteRef, decode_result

    raised = fb.call_raised(resps, stmt, ep)
    if raised is not None:
        return raised
    try:
        values = [decode_result(r.get("ok"), lambda d, lb=label: RemoteRef(relay, d, lb))
                  for r, label in zip(resps, labels)]
    except RemoteException as e:  # a value the wire cannot carry back
        return "error", f"`{fb.statement_text(stmt, ep)}` raised {fb.describe_exception(e.info)}"
    relay.last_call = (labels[-1], values[-1]) if values else None
    ns[RESULTS] = values
    return _exec_statement(prep.batched[i].check, ns, relay, stmt, ep, limit)


def _namespace(prep, problem, relay) -> dict:
    from selfdebug.sandbox.remote import RemoteRef

    ns = dict(prep.prelude)
    for name in prep.remote_names:
        ns[name] = RemoteRef(relay, ["N", name], name)
    ep = problem.entry_point
    if ep:
        ns["candidate"] = ns[ep] = RemoteRef(relay, ["N", ep], ep)
    return ns


def _serve(conn: _Conn) -> None:
    from selfdebug.sandbox.prepare import Prepared, prepare_asserts

    tasks: collections.OrderedDict = collections.OrderedDict()
    relay = _Relay(conn)
    state: dict = {}
    conn.send(("ready",))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        op = msg[0]
        if op == "task":
            prep = Prepared(limit=0.0)
            prepare_asserts(msg[2], prep)  # as the judge did: it cannot fail here
            tasks[msg[1]] = (msg[2], prep)
            while len(tasks) > MAX_TASKS:
                tasks.popitem(last=False)
        elif op == "begin":
            problem, prep = tasks[msg[1]]
            tasks.move_to_end(msg[1])
            relay.last_call = None
            state = {"problem": problem, "prep": prep, "limit": msg[2],
                     "ns": _namespace(prep, problem, relay)}
        elif op == "batch":
            problem, prep, ns, limit = (state[k] for k in ("problem", "prep", "ns", "limit"))
            for i, resps, labels in msg[1]:
                stmt = problem.tests.asserts[i]
                outcome, note = _check_batched(prep, i, resps, labels, ns, relay, stmt,
                                               problem.entry_point, limit)
                conn.send(("done", i, outcome, note))
                if (msg[2] and outcome != "pass") or note.endswith("[dead]"):
                    break
            conn.send(("end",))
        elif op == "stmt":
            problem, prep, ns, limit = (state[k] for k in ("problem", "prep", "ns", "limit"))
            i = msg[1]
            relay.last_call = None
            outcome, note = _exec_statement(prep.compiled[i], ns, relay,
                                            problem.tests.asserts[i], problem.entry_point,
                                            limit)
            conn.send(("done", i, outcome, note))


def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) << 10
    return 0


def main(argv: list[str]) -> None:
    rfd, wfd, memory_mb = int(argv[0]), int(argv[1]), int(argv[2])
    # gone with the judge, even mid-computation (PR_SET_PDEATHSIG = 1)
    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:
        return
    import selfdebug.sandbox.prepare  # noqa: F401  (imports counted in the baseline)
    # The tests' own work gets ``memory_mb`` on top of this interpreter's baseline: an
    # allocation past it is a MemoryError in the test (a failed test), never host memory.
    room = _vm_bytes() + (memory_mb << 20)
    resource.setrlimit(resource.RLIMIT_AS, (room, room))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _serve(_Conn(rfd, wfd))


if __name__ == "__main__":
    main(sys.argv[1:])
