"""What runs inside one worker (a fork of the pristine zygote): its own private writable
places, lock-down, then the candidate (stdlib only).

Imported by path from zygote.py inside the sandbox, so it must not import selfdebug.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import io
import json
import linecache
import os
import resource
import sys
import threading
import time
import traceback

import wire

try:  # seccomp is optional: the trusted side reports what was in force
    import pyseccomp as seccomp
except Exception:  # noqa: BLE001  (ImportError, or OSError when libseccomp is missing)
    seccomp = None

FILENAME = "solution.py"
CLONE_THREAD = 0x00010000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 32, 4096, 16384
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
_libc = ctypes.CDLL(None, use_errno=True)


def set_dumpable(on: bool) -> None:
    _libc.prctl(PR_SET_DUMPABLE, int(on), 0, 0, 0)


def die_with_parent() -> None:
    _libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)  # SIGKILL when the parent goes

_DENIED = (
    "fork vfork execve execveat socket socketpair connect bind listen accept accept4 "
    "ptrace process_vm_readv process_vm_writev setsid setpgid mount umount2 unshare setns "
    "pivot_root chroot reboot kexec_load init_module finit_module delete_module bpf "
    "perf_event_open userfaultfd pidfd_open pidfd_getfd pidfd_send_signal keyctl add_key "
    "request_key iopl ioperm swapon swapoff syslog acct settimeofday clock_settime "
    "sethostname setdomainname mknod mknodat io_uring_setup "
    # nothing shared with a later sample: SysV and POSIX IPC (the IPC namespace is private
    # too where namespaces exist; this covers the degraded mode)
    "shmget shmat shmctl shmdt msgget msgsnd msgrcv msgctl semget semop semtimedop semctl "
    "mq_open mq_unlink mq_timedsend mq_timedreceive mq_notify mq_getsetattr "
    # no signals to anyone: the filter is compiled once, before any child's pid is known
    "kill tkill tgkill rt_sigqueueinfo rt_tgsigqueueinfo"
).split()
SECCOMP_MODE_FILTER = 2


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def compile_seccomp() -> bytes | None:
    """The children's filter as raw BPF, built once per server (building it with libseccomp
    in every child would cost more than the fork)."""
    if seccomp is None:
        return None
    eperm = seccomp.ERRNO(errno.EPERM)
    f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in _DENIED:
        try:
            f.add_rule(eperm, name)
        except (RuntimeError, ValueError, OSError):
            pass  # syscall unknown on this arch
    # Threads are fine (they die with the process group); new processes are not.
    f.add_rule(eperm, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
    f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")  # glibc falls back to clone
    # prlimit on another process (the zygote: same uid) would change what later samples
    # run under; on itself (pid 0, which glibc's setrlimit uses) it is harmless.
    f.add_rule(eperm, "prlimit64", seccomp.Arg(0, seccomp.NE, 0))
    fd = os.memfd_create("bpf", 0)
    with os.fdopen(fd, "w+b") as out:
        f.export_bpf(out)
        out.seek(0)
        return out.read()


def load_seccomp(bpf: bytes) -> None:
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = _SockFprog(len(bpf) // 8, ctypes.addressof(buf))
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        os._exit(71)  # never run a candidate unfiltered when a filter was promised


class CappedText(io.TextIOBase):
    """stdout/stderr replacement: keeps the first ``cap`` characters, drops the rest."""

    def __init__(self, cap: int):
        self.cap, self.parts, self.size = cap, [], 0

    def writable(self):
        return True

    def write(self, s):
        s = str(s)
        if self.size < self.cap:
            self.parts.append(s[: self.cap - self.size])
            self.size += len(self.parts[-1])
        return len(s)

    def getvalue(self):
        return "".join(self.parts)


def lock_down(limits: dict, cfg: dict) -> None:
    """Runs in the child right after fork: session, fds, rlimits, uid, no-new-privs, seccomp."""
    os.setsid()

    def setlim(res, value):
        try:
            resource.setrlimit(res, (value, value))
        except (ValueError, OSError):
            pass

    setlim(resource.RLIMIT_CORE, 0)
    if limits.get("as_bytes"):
        setlim(resource.RLIMIT_AS, int(limits["as_bytes"]))
    if limits.get("cpu_s"):
        setlim(resource.RLIMIT_CPU, int(limits["cpu_s"]))
    if limits.get("fsize"):
        setlim(resource.RLIMIT_FSIZE, int(limits["fsize"]))
    if limits.get("nofile"):
        setlim(resource.RLIMIT_NOFILE, int(limits["nofile"]))
    uid = cfg.get("drop_uid")
    if uid is not None and os.getuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if cfg.get("bpf"):
        load_seccomp(cfg["bpf"])


def redirect_std(stdin_fd: int | None, out_fd: int | None, err_fd: int | None, keep: set[int]):
    """Point fds 0-2 where asked (else /dev/null) and close every other fd but ``keep``."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for target, src in ((0, stdin_fd), (1, out_fd), (2, err_fd)):
        os.dup2(devnull if src is None else src, target)
    lo = 3
    for fd in sorted(k for k in keep if k >= 3) + [1 << 16]:
        os.closerange(lo, fd)
        lo = fd + 1


def format_exc(exc: BaseException) -> dict:
    tb = traceback.extract_tb(exc.__traceback__)
    frames = [f for f in tb if f.filename == FILENAME]
    lines = [f"line {f.lineno}, in {f.name}: {(f.line or '').strip()}" for f in frames[-3:]]
    lineno = frames[-1].lineno if frames else getattr(exc, "lineno", None)
    msg = str(exc)
    if isinstance(exc, SyntaxError):
        msg = exc.msg
        lineno = exc.lineno
        lines = [f"line {exc.lineno}: {(exc.text or '').strip()}"]
    return {"type": type(exc).__name__, "msg": msg[:2000], "line": lineno, "frames": lines}


def _pidfd(pid: int) -> int:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return -1


def compile_program(code: str):
    linecache.cache[FILENAME] = (len(code), None, code.splitlines(True), FILENAME)
    return compile(code, FILENAME, "exec", dont_inherit=True)


# ----------------------------------------------------------------- worker set-up
def _mount(src, target: str, fstype, flags: int, data) -> None:
    def enc(v):
        return v.encode() if isinstance(v, str) else v

    if _libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def drop_capabilities() -> None:
    """The zygote holds CAP_SYS_ADMIN inside the sandbox's namespaces (to mount each
    sample's fresh /tmp); a worker gives up every capability before anything else."""
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, self
    data = (ctypes.c_uint32 * 6)()
    if _libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


class PrivateTmp:
    """A fresh, size-limited tmpfs on /tmp for every worker, mounted by the zygote before
    the fork (the previous one detached: it goes when its last user has gone). Nothing a
    sample writes reaches a later one, and there is no wipe that could miss a mode-000
    directory or read a planted file name into anyone's memory. ``keep``: top-level /tmp
    entries that are bind mounts of the interpreter (a CI checkout under /tmp), bound again
    on every new /tmp."""

    def __init__(self, size_bytes: int, keep: list[str]):
        self.size = size_bytes
        self.held = {name: os.open(os.path.join("/tmp", name), os.O_PATH) for name in keep}
        self.mounted = False

    def renew(self) -> None:
        if self.mounted and _libc.umount2(b"/tmp", 2) != 0:  # MNT_DETACH
            raise OSError(ctypes.get_errno(), "umount /tmp")
        self.mounted = False
        flags = MS_NOSUID | MS_NODEV
        _mount("tmpfs", "/tmp", "tmpfs", flags, f"size={self.size},nr_inodes=16384,mode=1777")
        self.mounted = True
        for name, fd in self.held.items():
            target = os.path.join("/tmp", name)
            os.mkdir(target)
            _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC, None)
            _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags, None)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def worker_main(spawn: dict, fds: list[int], cfg: dict) -> None:
    """Runs in a fresh fork of the zygote. ``fds``: [the sample's request (a memfd the
    trusted side wrote), the result channel, then the follow-up request pipe (call mode) or
    the stdout file (io mode)]."""
    die_with_parent()
    if cfg.get("private_tmp"):
        drop_capabilities()
    init_fd, resp_fd, third = fds
    os.chdir(spawn.get("workdir") or "/tmp")
    os.lseek(init_fd, 0, os.SEEK_SET)
    msg = wire.loads_frame(_read_all(init_fd))
    os.close(init_fd)
    if spawn.get("mode") == "io":
        # stdin is a file, as judges provide it: fstat gives its size and a read gets it
        # all (competitive-programming fast-IO templates rely on both)
        in_fd = os.memfd_create("stdin", 0)
        os.write(in_fd, msg.get("stdin", "").encode())
        os.lseek(in_fd, 0, os.SEEK_SET)
        redirect_std(in_fd, third, resp_fd, set())
        child_io_mode(msg, cfg)
    else:
        child_call_mode(third, resp_fd, msg, cfg)


# ----------------------------------------------------------------- child: call mode
class Handles:
    def __init__(self):
        self.objs: list = []

    def make_ref(self, obj):
        self.objs.append(obj)
        return ["h", len(self.objs) - 1, type(obj).__name__]

    def resolve(self, data, ns):
        if data[0] == "h":
            return self.objs[int(data[1])]
        return ns[data[1]]  # ["N", name]: a name in the program's namespace


def child_call_mode(req_fd: int, resp_fd: int, msg: dict, cfg: dict) -> None:
    redirect_std(None, None, None, {req_fd, resp_fd})
    lock_down(msg["limits"], cfg)
    out = CappedText(4096)
    sys.stdout = sys.stderr = out
    sys.stdin = io.StringIO("")
    ns = {"__name__": "__candidate__", "__builtins__": __builtins__}
    handles = Handles()
    try:
        exec(compile_program(msg["code"]), ns)
        if msg.get("setup"):
            exec(compile(msg["setup"], "<test setup>", "exec"), ns)
        reply = {"loaded": True}
    except MemoryError:
        reply = {"load_error": {"type": "MemoryError", "msg": "", "line": None, "frames": []}}
    except BaseException as e:  # noqa: BLE001  SystemExit from the candidate included
        reply = {"load_error": format_exc(e)}
    wire.write_frame(resp_fd, reply)
    if "load_error" in reply:
        os._exit(0)

    def dec(v):
        return wire.decode(v, lambda d: handles.resolve(d, ns))

    def enc(v):
        try:
            encoded = {"ok": wire.encode(v, handles.make_ref, returning=True)}
            if len(wire.dumps_frame(encoded)) > wire.MAX_FRAME - 4096:
                return {"exc": {"type": "OutputError", "msg": "value too large to return "
                                f"(over {wire.MAX_FRAME >> 20} MiB)", "line": None, "frames": []}}
            return encoded
        except wire.Unencodable as e:
            return {"exc": {"type": "OutputError", "msg": str(e), "line": None, "frames": []}}
        except RecursionError:
            return {"exc": {"type": "OutputError", "msg": "value nested too deeply",
                            "line": None, "frames": []}}
        except Exception as e:  # noqa: BLE001  a candidate's object that breaks encoding
            return {"exc": {"type": "OutputError", "msg": f"cannot return the value: "
                            f"{type(e).__name__}", "line": None, "frames": []}}

    def run_one(req):
        try:
            target = dec(req["target"])
            op = req["op"]
            if op == "call":
                args = [dec(a) for a in req.get("args", [])]
                kwargs = {k: dec(v) for k, v in req.get("kwargs", {}).items()}
                return enc(target(*args, **kwargs))
            if op == "getattr":
                return enc(getattr(target, req["attr"]))
            if op == "getitem":
                return enc(target[dec(req["key"])])
            if op == "len":
                return enc(len(target))
            if op == "list":
                return enc(list(target))
            if op == "bool":
                return enc(bool(target))
            if op == "str":
                return enc(str(target))
            if op == "repr":
                return enc(repr(target))
            return {"exc": {"type": "ProtocolError", "msg": f"unknown op {op}"}}
        except MemoryError:
            return {"exc": {"type": "MemoryError", "msg": "", "line": None, "frames": []}}
        except BaseException as e:  # noqa: BLE001
            return {"exc": format_exc(e)}

    def serve(req):
        if req.get("op") == "call_many":
            # One frame per result, written as soon as the call returns: when a later call
            # hangs, every earlier verdict has already left (the server batches them).
            kwargs = req.get("kwargs") or [{}] * len(req["inputs"])
            for args, kw in zip(req["inputs"], kwargs):
                t0 = time.perf_counter()
                result = run_one({"op": "call", "target": req["target"], "args": args,
                                  "kwargs": kw})
                wire.write_frame(resp_fd, {"batch": [result],
                                           "times": [time.perf_counter() - t0]})
        else:
            wire.write_frame(resp_fd, run_one(req))

    if msg.get("then"):  # the calls fused into the start: no round trip through the server
        serve(msg["then"])
    while True:
        try:
            req = wire.read_frame(req_fd)
        except (EOFError, wire.WireError):
            os._exit(0)
        serve(req)


# ----------------------------------------------------------------- child: stdin/stdout mode
def child_io_mode(msg: dict, cfg: dict) -> None:
    """fds are set up by the server: 0 = input, 1 = output file, 2 = error-report pipe."""
    lock_down(msg["limits"], cfg)
    # like the interpreter's own streams (.buffer, .mode, .name), which judges' programs use
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = CappedText(4096)  # raw fd 2 is the error channel, not for the program
    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    atexit._clear()  # handlers inherited from the server are not the program's
    code = 0
    try:
        exec(compile_program(msg["code"]), ns)
        _interpreter_exit()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:  # noqa: BLE001
        info = {"type": "MemoryError", "msg": "", "line": None, "frames": []} \
            if isinstance(e, MemoryError) else format_exc(e)
        _flush_stdout()
        try:
            os.write(2, json.dumps(info).encode()[:8192])
        except OSError:
            pass
        os._exit(1)
    _flush_stdout()
    os._exit(code if 0 <= code < 256 else 1)


def _interpreter_exit() -> None:
    """What the interpreter does after __main__: wait for threads, run atexit handlers
    (judges' fast-IO templates print from one)."""
    threading._shutdown()
    atexit._run_exitfuncs()


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BaseException:  # noqa: BLE001  closed or replaced by the program
        pass


