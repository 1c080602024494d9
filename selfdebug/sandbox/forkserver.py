"""Trusted-side handle on one sandboxed fork server, and the isolation it runs under."""

from __future__ import annotations

import functools
import json
import logging
import os
import select
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from selfdebug.sandbox import wire

SANDBOX_DIR = Path(__file__).resolve().parent
INNER_DIR = "/opt/selfdebug-sandbox"
NOBODY = 65534
log = logging.getLogger(__name__)


class SandboxUnavailable(RuntimeError):
    pass


class ServerDied(RuntimeError):
    pass


@dataclass(frozen=True)
class Isolation:
    bwrap: bool
    seccomp: bool
    uid_drop: bool

    @property
    def level(self) -> str:
        parts = (["bwrap(no-net,ro-fs,private-tmp)"] if self.bwrap else [])
        parts += ["seccomp"] if self.seccomp else []
        parts += ["uid-drop"] if self.uid_drop else []
        return "+".join(parts + ["rlimits", "no-new-privs"])


def _seccomp_available() -> bool:
    try:
        import pyseccomp  # noqa: F401
    except Exception:  # noqa: BLE001  ImportError or OSError (libseccomp missing)
        return False
    return True


def _bwrap_args(tmpfs_bytes: int) -> list[str]:
    args = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--uid", str(NOBODY), "--gid", str(NOBODY)]
    for top in ("/usr", "/bin", "/lib", "/lib64", "/sbin"):
        p = Path(top)
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), top]
        elif p.exists():
            args += ["--ro-bind", top, top]
    for f in ("/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives"):
        args += ["--ro-bind-try", f, f]
    # The private /tmp first: an interpreter or venv that lives under /tmp (a CI checkout)
    # is then bound on top of it instead of being hidden by it.
    args += ["--size", str(tmpfs_bytes), "--tmpfs", "/tmp"]
    for pre in python_prefixes():
        if not pre.startswith(("/usr/", "/bin/", "/lib")):
            args += ["--ro-bind", pre, pre]
    args += ["--ro-bind", str(SANDBOX_DIR), INNER_DIR, "--proc", "/proc", "--dev", "/dev",
             "--chdir", "/tmp", "--clearenv",
             "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
             "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONHASHSEED", "0",
             "--setenv", "PYTHONDONTWRITEBYTECODE", "1", "--"]
    return args


def python_prefixes() -> list[str]:
    """Directories the interpreter needs inside the sandbox."""
    return sorted({os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), sys.prefix})


def preserved_tmp_entries() -> set[str]:
    """Top-level names under the sandbox's /tmp that are bind mounts, not candidate files."""
    return {Path(p).relative_to("/tmp").parts[0] for p in python_prefixes()
            if p.startswith("/tmp/")}


@functools.cache
def _bwrap_works() -> bool:
    if shutil.which("bwrap") is None:
        return False
    try:
        r = subprocess.run(_bwrap_args(1 << 20) + [sys.executable, "-c", "import pprint"],
                           capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("bubblewrap unusable, sandbox degrades: %s", e)
        return False
    if r.returncode != 0:
        log.warning("bubblewrap unusable, sandbox degrades: %s", r.stderr.decode()[-500:])
    return r.returncode == 0


def detect_isolation(mode: str = "auto") -> Isolation:
    """What this host allows. ``mode``: auto | bwrap | degraded | none (explicit opt-out)."""
    if mode == "none":
        return Isolation(bwrap=False, seccomp=False, uid_drop=False)
    bwrap = mode in ("auto", "bwrap") and _bwrap_works()
    if mode == "bwrap" and not bwrap:
        raise SandboxUnavailable(
            "isolation 'bwrap' requested but bubblewrap does not work here "
            "(install the 'bubblewrap' package; user namespaces must be allowed)")
    seccomp = _seccomp_available()
    uid_drop = not bwrap and os.getuid() == 0
    iso = Isolation(bwrap=bwrap, seccomp=seccomp, uid_drop=uid_drop)
    if not (bwrap or seccomp or uid_drop):
        raise SandboxUnavailable(
            "no isolation is available (no working bubblewrap, no libseccomp/pyseccomp, not "
            "root for a uid drop); refusing to run untrusted code. Install bubblewrap and "
            "libseccomp2, or set isolation: none to run unprotected on purpose.")
    return iso


class ForkServer:
    """One long-lived sandboxed server process; not thread-safe (one user at a time)."""

    def __init__(self, isolation: Isolation, tmpfs_bytes: int = 256 << 20):
        self.isolation = isolation
        self.tmpfs_bytes = tmpfs_bytes
        self.proc: subprocess.Popen | None = None
        self._tmp: str | None = None
        self.info: dict = {}
        self.starts = 0

    def _command(self) -> list[str]:
        cfg = {"seccomp": self.isolation.seccomp}
        if self.isolation.bwrap:
            cfg.update(workdir="/tmp", wipe_tmp=True, keep_tmp=sorted(preserved_tmp_entries()))
            return _bwrap_args(self.tmpfs_bytes) + [
                sys.executable, "-s", f"{INNER_DIR}/server.py", json.dumps(cfg)]
        self._tmp = tempfile.mkdtemp(prefix="selfdebug-sbx-")
        os.chmod(self._tmp, 0o755)
        cfg.update(workdir=self._tmp, wipe_tmp=False)
        if self.isolation.uid_drop:
            cfg["drop_uid"] = NOBODY
        return [sys.executable, "-s", str(SANDBOX_DIR / "server.py"), json.dumps(cfg)]

    def start(self) -> None:
        self.close()
        env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "LANG": "C.UTF-8"}
        self.proc = subprocess.Popen(self._command(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env, close_fds=True)
        self.starts += 1
        self.info = self._read(60.0)
        if not self.info.get("ready"):
            raise ServerDied(f"sandbox server failed to start: {self.info}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _read(self, timeout: float) -> dict:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            self.close()
            raise ServerDied(f"sandbox server did not answer within {timeout:.0f} s")
        try:
            return wire.read_frame(fd)
        except (EOFError, wire.WireError, OSError) as e:
            self.close()
            raise ServerDied(f"sandbox server channel broke: {e}") from None

    def request(self, msg: dict, timeout: float) -> dict:
        """Send one op; the server always answers within the op's own deadline + slack."""
        self.send(msg)
        reply = self._read(timeout * 3 + 10.0)  # the server may stretch a starved child's limit
        if "server_error" in reply:
            raise ServerDied(reply["server_error"])
        return reply

    def read_stream(self, count: int, timeout_each: float, first: dict | None = None):
        """Yield the ``count`` results of the call_many fused into a start, one by one; a
        death ends it with one ``{"dead": ...}`` item. Each item is ``(reply, seconds)``.
        ``first``: the start's reply, which carries the first results."""
        while count > 0:
            # the server answers after at most 256 results: 256 limits (x3 for starved ones)
            frame = first if first is not None else self._read(
                timeout_each * 3 * min(count, 256) + 10.0)
            first = None
            batch = frame.get("batch", [])
            count -= len(batch)
            yield from zip(({"resp": r} for r in batch), frame.get("times", []))
            if "dead" in frame or "batch" not in frame:
                yield {"dead": frame.get("dead", {"kind": "protocol", "detail": str(frame)[:200]})}, 0.0
                return

    def send(self, msg: dict) -> None:
        if not self.alive:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        try:
            wire.write_frame(self.proc.stdin.fileno(), msg)
        except OSError as e:
            self.close()
            raise ServerDied(f"sandbox server is gone: {e}") from None

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.proc.kill()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.SubprocessError):
                pass
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f and f.close()
                except OSError:
                    pass
            self.proc = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __del__(self):
        self.close()

