"""Trusted-side handles: the sandboxed zygote, the workers it forks, and the isolation.

The zygote (``zygote.py``) never receives code or results; this side creates each
worker's channels (a memfd holding its request, pipes for results and follow-up requests,
a memfd for stdout) and hands them to the zygote with the ``spawn`` command. The worker
answers here directly. A worker's death is read from the zygote (``reap``), its CPU time
from the kernel (the pidfd the zygote returns names its pid in this namespace).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import select
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from selfdebug.sandbox import wire
from selfdebug.sandbox.isolation import (
    INNER_DIR,
    NOBODY,
    PACKAGES_DIR,
    SANDBOX_DIR,
    Isolation,
    _bwrap_args,
    interpreter,
    package_binds,
    preserved_tmp_entries,
    seccomp_filter,
)

STARVED_WALL_FACTOR = 3.0  # a starved call may take this x its limit in wall time
CONTROL_TIMEOUT = 30.0
log = logging.getLogger(__name__)


class ServerDied(RuntimeError):
    pass


def _host_pid(pidfd: int) -> int | None:
    try:
        with open(f"/proc/self/fdinfo/{pidfd}") as f:
            for line in f:
                if line.startswith("Pid:"):
                    pid = int(line.split()[1])
                    return pid if pid > 0 else None
    except (OSError, ValueError):
        pass
    return None


class CpuClock:
    """A time limit with a fair wall-clock reading on a loaded machine.

    A worker that sits runnable without running would be called slow by wall time alone.
    When the wall deadline passes, the worker gets the time it spent waiting for a CPU
    (the kernel's run-queue delay: a sleeping worker is owed nothing), granted once per
    worker, never more than STARVED_WALL_FACTOR x the limit in wall time, and never past
    ``hard_deadline`` (the sample's own wall deadline).
    """

    def __init__(self, worker: Worker | None, limit: float, hard_deadline: float):
        self.worker, self.limit = worker, limit
        self.start = time.monotonic()
        self.deadline = min(self.start + limit, hard_deadline)
        self.hard = min(self.start + limit * STARVED_WALL_FACTOR, hard_deadline)

    def left(self) -> float:
        now = time.monotonic()
        if now < self.deadline:
            return self.deadline - now
        if self.worker is not None and now < self.hard:
            owed = self.worker.claim_run_delay()
            if owed > 0.01:
                self.deadline = min(self.hard, now + owed)
                return self.deadline - now
        return 0.0


class Worker:
    """One forked worker running one sample (or one io test), seen from the trusted side."""

    def __init__(self, server: ForkServer, pid: int, resp_r: int, req_w: int,
                 out_fd: int = -1, workdir: str | None = None):
        self.server, self.pid = server, pid
        self.host_pid: int | None = None  # looked up only when a deadline passes
        self.granted = 0.0  # run-queue delay already given back as time
        self.reader = wire.FrameReader(resp_r)
        self.resp_r, self.req_w, self.out_fd = resp_r, req_w, out_fd
        self.workdir = workdir
        self.ended: dict | None = None

    def clock(self, limit: float, hard_deadline: float) -> CpuClock:
        return CpuClock(self, limit, hard_deadline)

    def claim_run_delay(self) -> float:
        """Seconds this worker has waited for a CPU and not yet been given back."""
        if self.host_pid is None and self.ended is None:
            self.host_pid = self.server.host_pid(self.pid) or -1
        if not self.host_pid or self.host_pid < 0:
            return 0.0
        try:
            with open(f"/proc/{self.host_pid}/schedstat") as f:
                delay = int(f.read().split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            return 0.0
        owed, self.granted = max(0.0, delay - self.granted), max(delay, self.granted)
        return owed

    def read(self, clock: CpuClock):
        """The next frame: ("ok", value), ("timeout", None) or ("dead", detail)."""
        while True:
            try:
                data = self.reader.frame()
            except wire.WireError as e:
                return "dead", str(e)
            if data is not None:
                try:
                    return "ok", wire.parse(data)
                except wire.WireError as e:
                    return "dead", str(e)
            left = clock.left()
            if left <= 0:
                return "timeout", None
            ready, _, _ = select.select([self.resp_r], [], [], left)
            if ready and not self.reader.fill():
                return "dead", "closed"

    def read_to_end(self, clock: CpuClock, cap: int = 1 << 16) -> tuple[bool, bytes]:
        """Everything the worker writes on its result channel until it closes (io mode).
        Returns (timed_out, data); data past ``cap`` is dropped."""
        data = bytearray()
        while True:
            left = clock.left()
            if left <= 0:
                return True, bytes(data)
            ready, _, _ = select.select([self.resp_r], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(self.resp_r, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                return False, bytes(data)
            if len(data) < cap:
                data += chunk[: cap - len(data)]

    def send(self, obj, timeout: float) -> bool:
        """A follow-up request; False when the worker is gone or does not take it in time."""
        view = memoryview(wire.dumps_frame(obj))
        deadline = time.monotonic() + timeout
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _, ready, _ = select.select([], [self.req_w], [], left)
            if not ready:
                continue
            try:
                n = os.write(self.req_w, view)
            except BlockingIOError:
                continue
            except OSError:
                return False
            view = view[n:]
        return True

    def death(self, kind: str, detail=None, grace: float = 0.0) -> dict:
        """End the worker and say how it ended: {kind, detail, exit, signal}."""
        status = self.end(grace=grace, wait=True) or {}
        return {"kind": kind, "detail": detail, "exit": status.get("exit"),
                "signal": status.get("signal")}

    def end(self, grace: float = 0.0, wait: bool = False) -> dict | None:
        """Kill and reap (in the zygote). ``wait``: for the exit status; otherwise the
        zygote does it while this side goes on (it handles commands in order)."""
        if self.ended is not None:
            return self.ended
        self.ended = {}
        for fd in (self.resp_r, self.req_w):
            if fd >= 0:
                os.close(fd)
        self.resp_r = self.req_w = -1
        wait = wait or self.workdir is not None  # its files go only once it is gone
        if not wait:  # killed and reaped before the zygote's next command
            self.server.reap_later.append(self.pid)
        else:
            try:
                self.ended = self.server.reap(self.pid, grace)
            finally:
                if self.workdir:
                    shutil.rmtree(self.workdir, ignore_errors=True)
        return self.ended

    def take_output(self, cap: int) -> tuple[str, bool]:
        """(stdout, truncated) of an io worker, from the memfd it wrote."""
        size = os.lseek(self.out_fd, 0, os.SEEK_END)
        out = os.pread(self.out_fd, min(size, cap), 0)
        os.close(self.out_fd)
        self.out_fd = -1
        return out.decode("utf-8", "replace"), size > cap


class ForkServer:
    """The trusted handle on one sandboxed zygote; not thread-safe (one user at a time)."""

    def __init__(self, isolation: Isolation, tmpfs_bytes: int = 256 << 20,
                 packages: tuple[str, ...] = ()):
        self.isolation = isolation
        self.tmpfs_bytes = tmpfs_bytes
        self.packages = tuple(packages)
        self.proc: subprocess.Popen | None = None
        self.ctl: socket.socket | None = None
        self._tmp: str | None = None
        self.info: dict = {}
        self.starts = 0
        self.reap_later: list[int] = []

    def _command(self, ctl_fd: int) -> list[str]:
        bpf = seccomp_filter() if self.isolation.seccomp else None
        cfg = {"ctl_fd": ctl_fd, "bpf": bpf.hex() if bpf else None}
        if self.isolation.bwrap:
            cfg.update(private_tmp=True, sys_path=[PACKAGES_DIR], tmp_bytes=self.tmpfs_bytes,
                       keep_tmp=sorted(preserved_tmp_entries()))
            return _bwrap_args(self.tmpfs_bytes, self.packages) + [
                interpreter(), "-s", "-S", f"{INNER_DIR}/zygote.py", json.dumps(cfg)]
        self._tmp = tempfile.mkdtemp(prefix="selfdebug-sbx-")
        os.chmod(self._tmp, 0o755)
        if self.isolation.uid_drop:
            cfg["drop_uid"] = NOBODY
        cfg["sys_path"] = sorted({str(Path(src).parent) for src, _ in package_binds(self.packages)})
        return [interpreter(), "-s", "-S", str(SANDBOX_DIR / "zygote.py"), json.dumps(cfg)]

    def start(self) -> None:
        self.close()
        self.reap_later = []
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "LANG": "C.UTF-8"}
        try:
            self.proc = subprocess.Popen(self._command(theirs.fileno()), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         env=env, close_fds=True, pass_fds=[theirs.fileno()])
        finally:
            theirs.close()
        self.ctl = ours
        self.starts += 1
        self.info = self._recv(60.0)[0]
        if not self.info.get("ready"):
            raise ServerDied(f"sandbox zygote failed to start: {self.info}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _recv(self, timeout: float) -> tuple[dict, list[int]]:
        assert self.ctl is not None
        ready, _, _ = select.select([self.ctl], [], [], timeout)
        if not ready:
            self.close()
            raise ServerDied(f"sandbox zygote did not answer within {timeout:.0f} s")
        try:
            data, anc, _, _ = self.ctl.recvmsg(1 << 16, socket.CMSG_SPACE(4 * 4))
        except OSError as e:
            self.close()
            raise ServerDied(f"sandbox zygote channel broke: {e}") from None
        fds = wire.received_fds(anc)
        if not data:
            self.close()
            raise ServerDied("sandbox zygote is gone")
        reply = json.loads(data)
        if "fatal" in reply:
            for fd in fds:
                os.close(fd)
            self.close()
            raise ServerDied(f"sandbox zygote stopped: {reply['fatal']}")
        return reply, fds

    def _send(self, msg: dict, fds: list[int] = ()) -> None:
        if not self.alive or self.ctl is None:
            # never restarted behind a caller's back: what ran under the old one is lost
            raise ServerDied("sandbox zygote is gone")
        if self.reap_later:
            msg = {**msg, "reap_first": self.reap_later}
            self.reap_later = []
        try:
            anc = wire.rights(fds)
            self.ctl.sendmsg([json.dumps(msg).encode()], anc)
        except OSError as e:
            self.close()
            raise ServerDied(f"sandbox zygote is gone: {e}") from None

    def request(self, msg: dict, timeout: float = CONTROL_TIMEOUT) -> dict:
        """One control command and its reply (ping, reap)."""
        if not self.alive:
            self.start()
        self._send(msg)
        return self._recv(timeout)[0]

    def reap(self, pid: int, grace: float = 0.0) -> dict:
        """Kill (after ``grace`` seconds) and reap a worker: its exit code or signal."""
        self._send({"op": "reap", "pid": pid, "grace": grace})
        return self._recv(grace + CONTROL_TIMEOUT)[0]

    def host_pid(self, pid: int) -> int | None:
        """A worker's pid in this side's pid namespace (from a pidfd the zygote sends)."""
        self._send({"op": "pidfd", "pid": pid})
        _, fds = self._recv(CONTROL_TIMEOUT)
        for fd in fds[1:]:
            os.close(fd)
        if not fds:
            return None
        try:
            return _host_pid(fds[0])
        finally:
            os.close(fds[0])

    def spawn(self, mode: str, request: dict, io_stdout: bool = False) -> Worker:
        """A fresh worker that reads ``request`` (code, inputs, limits) and answers here."""
        if not self.alive:
            self.start()
        init = os.memfd_create("request", os.MFD_CLOEXEC)
        resp_r, resp_w = os.pipe2(os.O_CLOEXEC)
        third_theirs, req_w, out_fd = -1, -1, -1
        workdir = None
        try:
            frame = wire.dumps_frame(request)
            view = memoryview(frame)
            while view:
                view = view[os.write(init, view):]
            if io_stdout:
                out_fd = os.memfd_create("stdout", os.MFD_CLOEXEC)
                third_theirs = os.dup(out_fd)
            else:
                third_theirs, req_w = os.pipe2(os.O_CLOEXEC)
            msg = {"op": "spawn", "mode": mode}
            if not self.isolation.bwrap:  # no private namespace: a fresh directory instead
                workdir = tempfile.mkdtemp(prefix="w-", dir=self._tmp)
                os.chmod(workdir, 0o777 if self.isolation.uid_drop else 0o700)
                msg["workdir"] = workdir
            self._send(msg, [init, resp_w, third_theirs])
        finally:
            for fd in (init, resp_w, third_theirs):
                if fd >= 0:
                    os.close(fd)
        reply, fds = self._recv(CONTROL_TIMEOUT)
        for fd in fds:
            os.close(fd)
        pid = int(reply["pid"])
        os.set_blocking(resp_r, False)
        try:  # big results in fewer, larger reads
            fcntl.fcntl(resp_r, fcntl.F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass
        if req_w >= 0:
            os.set_blocking(req_w, False)
        return Worker(self, pid, resp_r, req_w, out_fd, workdir)

    def close(self) -> None:
        if self.proc is not None:
            kill_and_reap(self.proc)
            self.proc = None
        if self.ctl is not None:
            self.ctl.close()
            self.ctl = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __del__(self):
        self.close()


def kill_and_reap(proc: subprocess.Popen) -> None:
    """Kill a helper process and wait for it (bounded); one that is already gone is fine."""
    try:
        proc.kill()
        proc.wait(timeout=10)
    except (OSError, subprocess.SubprocessError):
        pass
