"""The fork server: runs inside the sandbox, forks one locked-down child per execution.

Started by the trusted side (``forkserver.ForkServer``) as ``python server.py CONFIG_JSON``,
usually under bubblewrap. It speaks framed JSON on stdin/stdout. It never sees tests'
expected values: it receives code and inputs and returns outputs. Children run the
candidate; they talk to the server over their own pipes, never over the server's channel,
so a candidate cannot forge or desynchronise the protocol. Stdlib only (plus pyseccomp if
importable): this file is imported by path, not as part of selfdebug.
"""

from __future__ import annotations

import gc
import json
import os
import select
import shutil
import signal
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire  # noqa: E402

# Warm the fork template: modules candidates commonly import are loaded once here, so a
# forked child pays nothing for them.
PREIMPORT = (
    "math re collections itertools functools heapq bisect string typing random copy json "
    "statistics decimal fractions datetime operator array hashlib cmath textwrap "
    "dataclasses enum abc numbers unicodedata pprint queue io struct calendar base64 "
    "inspect threading atexit fnmatch glob"
).split()
for _m in PREIMPORT:
    try:
        __import__(_m)
    except ImportError:
        pass

from child import (  # noqa: E402  (the sandbox dir is on sys.path only from here)
    PR_SET_DUMPABLE,
    _libc,
    _pidfd,
    child_call_mode,
    child_io_mode,
    compile_seccomp,
    redirect_std,
    seccomp,
)

# ----------------------------------------------------------------- server side
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STARVED_WALL_FACTOR = 3.0
STREAM_FRAME_BYTES = 8 << 20  # results passed on once this much has gathered (big outputs)


def _cpu_seconds(pid: int) -> float:
    try:  # the process's CPU clock: one syscall (clock_getcpuclockid's encoding)
        return time.clock_gettime((~pid << 3) | 2)
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
    except (OSError, IndexError, ValueError):
        return float("inf")


class CpuClock:
    """A time limit in CPU seconds, with a wall-clock cap.

    On a loaded machine a child can sit runnable without running; judging it by wall time
    would call a correct solution slow. When the wall deadline passes, the child gets the
    CPU time it is still owed, up to STARVED_WALL_FACTOR x the limit in wall time.
    """

    def __init__(self, pid: int | None, limit: float):
        self.pid, self.limit = pid, limit
        self.start = time.monotonic()
        self.cpu0 = _cpu_seconds(pid) if pid else 0.0
        self.deadline = self.start + limit
        self.hard = self.start + limit * STARVED_WALL_FACTOR

    def left(self) -> float:
        now = time.monotonic()
        if now < self.deadline:
            return self.deadline - now
        if self.pid and now < self.hard:
            owed = self.limit - (_cpu_seconds(self.pid) - self.cpu0)
            if owed > 0.01:
                self.deadline = min(self.hard, now + owed)
                return self.deadline - now
        return 0.0



class Server:
    def __init__(self, in_fd: int, out_fd: int, cfg: dict):
        self.in_fd, self.out_fd, self.cfg = in_fd, out_fd, cfg
        self.child_pid: int | None = None
        self.req_w = self.resp_r = -1
        self.buf = b""
        self.last_frame_bytes = 0
        self.workroot = cfg.get("workdir", "/tmp")

    def send(self, obj):
        wire.write_frame(self.out_fd, obj)

    # -- helpers
    def _fresh_workdir(self) -> str:
        path = os.path.join(self.workroot, "run")
        shutil.rmtree(path, ignore_errors=True)
        self._wipe_tmp()
        os.makedirs(path, exist_ok=True)
        uid = self.cfg.get("drop_uid")
        if uid is not None and os.getuid() == 0:
            os.chown(path, uid, uid)
        return path

    def _wipe_tmp(self):
        # Whatever a candidate left in the private /tmp must not reach the next one.
        if not self.cfg.get("wipe_tmp"):
            return
        keep = set(self.cfg.get("keep_tmp") or ())  # mount points of the interpreter
        for name in os.listdir("/tmp"):
            if name in keep:
                continue
            p = os.path.join("/tmp", name)
            try:
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    os.unlink(p)
            except OSError:
                pass

    def _kill(self, pid: int) -> tuple[int | None, int | None]:
        """Kill the child's whole process group and reap it; returns (exit code, signal)."""
        for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
            try:
                target()
            except (ProcessLookupError, PermissionError):
                pass
        return self._reap(pid, block=True)

    def _reap(self, pid: int, block: bool) -> tuple[int | None, int | None]:
        try:
            got, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return None, None
        if got == 0:
            return None, None
        # Orphans (none should exist under seccomp) are reaped too.
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        if os.WIFSIGNALED(status):
            return None, os.WTERMSIG(status)
        return os.WEXITSTATUS(status), None

    def _read_child_frame(self, timeout: float):
        """One frame from the child, or ('dead'|'timeout', detail)."""
        clock = CpuClock(self.child_pid, timeout)
        while True:
            if len(self.buf) >= 4:
                (size,) = struct.unpack("<I", self.buf[:4])
                if size > wire.MAX_FRAME:
                    return "dead", "oversized frame"
                if len(self.buf) >= 4 + size:
                    data, self.buf = self.buf[4 : 4 + size], self.buf[4 + size :]
                    self.last_frame_bytes = size
                    try:
                        return "ok", json.loads(data)
                    except ValueError:
                        return "dead", "malformed frame"
            left = clock.left()
            if left <= 0:
                return "timeout", None
            ready, _, _ = select.select([self.resp_r], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.resp_r, 1 << 20)
            if not chunk:
                return "dead", "closed"
            self.buf += chunk

    def _end_child(self) -> tuple[int | None, int | None]:
        code = sig = None
        if self.child_pid is not None:
            code, sig = self._kill(self.child_pid)
        for fd in (self.req_w, self.resp_r):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.child_pid, self.req_w, self.resp_r, self.buf = None, -1, -1, b""
        return code, sig

    def _death(self, kind: str, detail=None) -> dict:
        code, sig = self._end_child()
        return {"dead": {"kind": kind, "detail": detail, "exit": code, "signal": sig}}

    # -- ops
    def op_start(self, msg):
        self._end_child()
        workdir = self._fresh_workdir()
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.chdir(workdir)
                os.close(req_w)
                os.close(resp_r)
                child_call_mode(req_r, resp_w, msg, self.cfg)
            finally:
                os._exit(70)
        os.close(req_r)
        os.close(resp_w)
        self.child_pid, self.req_w, self.resp_r, self.buf = pid, req_w, resp_r, b""
        status, reply = self._read_child_frame(msg["timeout"])
        if status != "ok":
            return self._death(status, reply)
        if reply != {"loaded": True}:
            # a load error, or a frame the program forged before the harness spoke
            self._end_child()
            if not (isinstance(reply, dict) and isinstance(reply.get("load_error"), dict)):
                return {"dead": {"kind": "protocol", "detail": "unexpected frame"}}
        return reply

    def op_req(self, msg):
        if self.child_pid is None:
            return {"dead": {"kind": "dead", "detail": "no session"}}
        try:
            wire.write_frame(self.req_w, msg["req"])
        except OSError:
            return self._death("dead", "closed")
        status, reply = self._read_child_frame(msg["timeout"])
        if status != "ok":
            return self._death(status, reply)
        return {"resp": reply}

    def op_stream(self, req: dict, timeout: float, head: dict):
        """After a start whose message carried a call_many (the child runs it at once):
        collect the child's per-call results and pass them on in a few large frames (every
        256 results or 8 MiB), the first one with ``head`` (the load reply); a timeout or death ends
        it, marked on the last frame."""
        left = len(req["inputs"])
        batch, times, size = [], [], 0
        while left > 0:
            status, reply = self._read_child_frame(timeout)
            if status != "ok":
                self.send({**head, "batch": batch, "times": times, **self._death(status, reply)})
                return
            got = reply.get("batch") if isinstance(reply, dict) else None
            if not isinstance(got, list) or not got:
                self.send({**head, "batch": batch, "times": times,
                           **self._death("protocol", "unexpected frame")})
                return
            batch += got
            times += reply.get("times", [0.0] * len(got))
            left -= len(got)
            size += self.last_frame_bytes
            if len(batch) >= 256 or size >= STREAM_FRAME_BYTES or left <= 0:
                self.send({**head, "batch": batch, "times": times})
                batch, times, head, size = [], [], {}, 0

    def op_end(self, msg):
        self._end_child()
        self._wipe_tmp()

    def op_io(self, msg):
        """Run the program once on one stdin; return its stdout and how it ended."""
        self._end_child()
        workdir = self._fresh_workdir()
        # stdin is a file, as judges provide it: fstat gives its size and a read gets it all
        # (competitive-programming fast-IO templates rely on both).
        in_fd = os.memfd_create("stdin", 0)
        os.write(in_fd, msg.get("stdin", "").encode())
        os.lseek(in_fd, 0, os.SEEK_SET)
        out_fd = os.memfd_create("stdout", 0)
        err_r, err_w = os.pipe()
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:
            try:
                os.chdir(workdir)
                redirect_std(in_fd, out_fd, err_w, set())
                child_io_mode(msg, self.cfg)
            finally:
                os._exit(70)
        for fd in (in_fd, err_w):
            os.close(fd)
        pidfd = _pidfd(pid)
        clock = CpuClock(pid, msg["timeout"])
        err_chunks, timed_out, exited = [], False, False
        while not exited:
            left = clock.left()
            if left <= 0:
                timed_out = True
                break
            rlist = [fd for fd in (err_r, pidfd) if fd >= 0]
            r, _, _ = select.select(rlist, [], [], min(left, 0.002 if pidfd < 0 else left))
            if err_r in r:
                chunk = os.read(err_r, 8192)
                if chunk:
                    if sum(map(len, err_chunks)) < 65536:  # a report is small; drop floods
                        err_chunks.append(chunk)
                else:
                    os.close(err_r)
                    err_r = -1
            if pidfd < 0 or pidfd in r:
                exited = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        elapsed = time.monotonic() - t0
        code, sig = self._kill(pid)  # also reaps; kills leftover threads' group
        if pidfd >= 0:
            os.close(pidfd)
        if err_r >= 0:
            os.set_blocking(err_r, False)
            try:
                while chunk := os.read(err_r, 8192):
                    err_chunks.append(chunk)
            except (BlockingIOError, OSError):
                pass
            os.close(err_r)
        cap = int(msg.get("output_cap", 1 << 20))
        size = os.lseek(out_fd, 0, os.SEEK_END)
        out = os.pread(out_fd, min(size, cap), 0)
        os.close(out_fd)
        self._wipe_tmp()
        try:
            error = json.loads(b"".join(err_chunks)) if err_chunks else None
        except ValueError:
            error = None
        return {
            "stdout": out.decode("utf-8", "replace"),
            "truncated": size > cap,
            "exit": None if timed_out else code,
            "signal": None if timed_out else sig,
            "timeout": timed_out,
            "error": error if isinstance(error, dict) else None,
            "time": elapsed,
        }

    def serve(self):
        ops = {"start": self.op_start, "req": self.op_req, "io": self.op_io,
               "ping": lambda m: {"pong": True, "pid": os.getpid()}}
        while True:
            try:
                msg = wire.read_frame(self.in_fd)
            except (EOFError, wire.WireError):
                self._end_child()
                return
            op = msg.get("op")
            if op == "end":  # fire-and-forget: nobody waits for the cleanup
                self.op_end(msg)
                continue
            if op == "start" and msg.get("then"):
                # load, then at once the batch of calls: one round trip per sample
                try:
                    reply = self.op_start(msg)
                except Exception as e:  # noqa: BLE001
                    reply = {"server_error": f"server: {type(e).__name__}: {e}"}
                if reply.get("loaded"):
                    self.op_stream(msg["then"], msg["then_timeout"], head=reply)
                else:
                    self.send(reply)
                continue
            handler = ops.get(op)
            if handler is None:
                self.send({"server_error": f"unknown op {op!r}"})
                continue
            try:
                self.send(handler(msg))
            except Exception as e:  # noqa: BLE001
                self.send({"server_error": f"server: {type(e).__name__}: {e}"})


def main() -> None:
    # What the server holds is never collected: children then leave those pages shared
    # instead of copying them when their collector walks the heap.
    gc.freeze()
    cfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    in_fd, out_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    # Not dumpable: a child (same uid) cannot ptrace or read/write this process's memory.
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    cfg["seccomp"] = bool(cfg.get("seccomp")) and seccomp is not None
    cfg["bpf"] = compile_seccomp() if cfg["seccomp"] else None
    server = Server(in_fd, out_fd, cfg)
    server.send({"ready": True, "pid": os.getpid(), "seccomp": cfg["seccomp"],
                 "uid": os.getuid(), "python": sys.version.split()[0]})
    server.serve()


if __name__ == "__main__":
    main()
