"""The zygote: a pristine process inside the sandbox that only forks workers.

Started by the trusted side (``forkserver.ForkServer``) as ``python zygote.py CONFIG_JSON``,
usually under bubblewrap. It never receives code, inputs or results: its control socket
carries small JSON commands (spawn / reap / cpu / ping) and, with ``spawn``, the file
descriptors of a new worker's channels, which the trusted side created. The worker (a
fork of this process) reads its sample from those channels and answers on them directly,
so every worker starts from the same memory: this file's imports and nothing a candidate,
a reference solution or a test ever produced (README, "The sandbox").

Stdlib only: this file is imported by path, not as part of selfdebug.
"""

from __future__ import annotations

import array
import gc
import json
import os
import resource
import select
import signal
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Warm the fork template: modules candidates commonly import are loaded once here, so a
# forked worker pays nothing for them.
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

import child  # noqa: E402  (the sandbox dir is on sys.path only from here)
import wire  # noqa: E402

MAX_CONTROL = 1 << 16  # a control message is a few hundred bytes; no code ever comes here
MAX_FDS = 4
LIMITS = (resource.RLIMIT_AS, resource.RLIMIT_CPU, resource.RLIMIT_FSIZE,
          resource.RLIMIT_NOFILE, resource.RLIMIT_NPROC, resource.RLIMIT_STACK,
          resource.RLIMIT_CORE, resource.RLIMIT_DATA)


class Zygote:
    def __init__(self, ctl: socket.socket, cfg: dict):
        self.ctl, self.cfg = ctl, cfg
        self.limits = {r: resource.getrlimit(r) for r in LIMITS}  # re-asserted per fork
        self.tmp = (child.PrivateTmp(int(cfg["tmp_bytes"]), list(cfg.get("keep_tmp") or ()))
                    if cfg.get("private_tmp") else None)

    def reply(self, obj, fds: list[int] = ()) -> None:
        anc = wire.rights(fds)
        self.ctl.sendmsg([json.dumps(obj).encode()], anc)

    def _own_limits_intact(self) -> bool:
        """A worker must never run under limits another one lowered (prlimit is denied in
        seccomp; this also holds without it): re-assert ours, and report a change."""
        for res, want in self.limits.items():
            if resource.getrlimit(res) != want:
                try:
                    resource.setrlimit(res, want)
                except (ValueError, OSError):
                    return False
        return True

    def op_spawn(self, msg: dict, fds: list[int]) -> dict:
        if not self._own_limits_intact():
            return {"fatal": "the zygote's own resource limits were changed"}
        if self.tmp is not None:
            self.tmp.renew()
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                self.ctl.close()
                child.worker_main(msg, fds, self.cfg)
            except BaseException:  # noqa: BLE001  never return into the zygote's loop
                code = 71
            finally:
                os._exit(code)
        return {"pid": pid}

    @staticmethod
    def pidfd(pid: int) -> list[int]:
        """The worker as a pidfd for the trusted side: it names the worker's pid in the
        trusted side's own pid namespace (for its CPU clock)."""
        try:
            return [os.pidfd_open(pid)]
        except (AttributeError, OSError):
            return []

    @staticmethod
    def op_reap(msg: dict) -> dict:
        """Wait up to ``grace`` seconds for the worker to end, then kill its group; reap."""
        pid = int(msg["pid"])
        if pid <= 0:
            return {"exit": None, "signal": None}
        grace = min(float(msg.get("grace", 0.0)), 600.0)
        if grace > 0:
            try:
                pidfd = os.pidfd_open(pid)
                select.select([pidfd], [], [], grace)
                os.close(pidfd)
            except OSError:
                pass
        for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
            try:
                kill()
            except (ProcessLookupError, PermissionError):
                pass
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return {"exit": None, "signal": None}
        while True:  # orphans (none can exist under seccomp) are reaped too
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        if os.WIFSIGNALED(status):
            return {"exit": None, "signal": os.WTERMSIG(status)}
        return {"exit": os.WEXITSTATUS(status), "signal": None}


    def serve(self) -> None:
        fd_bytes = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
        while True:
            try:
                data, anc, flags, _ = self.ctl.recvmsg(MAX_CONTROL, fd_bytes)
            except OSError:
                return
            fds = wire.received_fds(anc)
            if not data or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                return  # the trusted side closed the channel, or broke the protocol
            msg: dict = {}
            op = None
            try:
                msg = json.loads(data)
                op = msg["op"]
                for pid in msg.get("reap_first") or ():  # workers ended since the last command
                    self.op_reap({"pid": pid})
                if op == "spawn":
                    out = self.op_spawn(msg, fds)
                elif op == "reap":
                    out = self.op_reap(msg)
                elif op == "pidfd":
                    out = {"pid": int(msg["pid"])}
                elif op == "ping":
                    out = {"pong": True, "pid": os.getpid()}
                else:
                    out = {"fatal": f"unknown op {op!r}"}
            except Exception as e:  # noqa: BLE001
                out = {"fatal": f"zygote: {type(e).__name__}: {e}"}
            finally:
                for fd in fds:
                    os.close(fd)
            if msg.get("reply", True) or "fatal" in out:
                extra = self.pidfd(out["pid"]) if op == "pidfd" else []
                self.reply(out, extra)
                for fd in extra:
                    os.close(fd)
            if "fatal" in out:
                return


def main() -> None:
    # What the zygote holds is never collected: workers then share those pages instead of
    # copying them when their collector walks the heap.
    gc.freeze()
    cfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    sys.path[1:1] = cfg.get("sys_path") or []  # the allowed packages, nothing else
    # `-S` (no site-packages) also leaves out the builtins exit() and quit(), which
    # programs call (many competitive-programming solutions end with exit()).
    import site

    site.setquit()
    ctl = socket.socket(fileno=int(cfg["ctl_fd"]))
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    # Not dumpable: a worker (same uid) cannot ptrace or read/write this process's memory.
    child.set_dumpable(False)
    child.die_with_parent()
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    cfg["bpf"] = bytes.fromhex(cfg["bpf"]) if cfg.get("bpf") else None
    zygote = Zygote(ctl, cfg)
    zygote.reply({"ready": True, "pid": os.getpid(), "seccomp": cfg["bpf"] is not None,
                  "uid": os.getuid(), "python": sys.version.split()[0],
                  "max_frame": wire.MAX_FRAME})
    zygote.serve()


if __name__ == "__main__":
    main()
