"""What isolation this host allows, and the sandbox's whole filesystem view (bubblewrap)."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SANDBOX_DIR = Path(__file__).resolve().parent
INNER_DIR = "/opt/selfdebug-sandbox"
PACKAGES_DIR = "/opt/selfdebug-packages"
NOBODY = 65534
log = logging.getLogger(__name__)


class SandboxUnavailable(RuntimeError):
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


@functools.cache
def seccomp_filter() -> bytes | None:
    """The workers' filter as raw BPF, compiled here once (the zygote has no pyseccomp)."""
    sys.path.insert(0, str(SANDBOX_DIR))  # child.py imports wire by its plain name
    try:
        import child
    finally:
        sys.path.remove(str(SANDBOX_DIR))
    return child.compile_seccomp()


def interpreter() -> str:
    """The base interpreter (never a virtualenv's: the sandbox sees no site-packages)."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def python_prefixes() -> list[str]:
    """Directories holding the interpreter and its standard library."""
    return sorted({os.path.realpath(sys.base_prefix)})


def _site_dirs(prefix: str) -> list[str]:
    """Package directories under an interpreter prefix: hidden in the sandbox's view."""
    out = []
    for lib in ("lib", "lib64"):
        base = Path(prefix, lib)
        for d in (base.glob("python3*/site-packages") if base.is_dir() else []):
            out.append(str(d))
        for d in (base.glob("python3*/dist-packages") if base.is_dir() else []):
            out.append(str(d))
    return out


def package_binds(packages: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """(host dir, sandbox dir) for each allowed package (and its bundled ``.libs``)."""
    out = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None:
            log.warning("sandbox package %r is not installed; skipped", name)
            continue
        if spec.submodule_search_locations:
            src = Path(list(spec.submodule_search_locations)[0])
        elif spec.origin:
            src = Path(spec.origin)
        else:
            continue
        out.append((str(src), f"{PACKAGES_DIR}/{src.name}"))
        libs = src.parent / f"{name}.libs"
        if libs.is_dir():
            out.append((str(libs), f"{PACKAGES_DIR}/{libs.name}"))
    return out


def preserved_tmp_entries() -> set[str]:
    """Top-level names under the sandbox's /tmp that are bind mounts, not candidate files."""
    return {Path(p).relative_to("/tmp").parts[0] for p in python_prefixes()
            if p.startswith("/tmp/")}


def _bwrap_args(tmpfs_bytes: int, packages=()) -> list[str]:
    """The sandbox's whole filesystem view: system libraries, the interpreter and its
    standard library, the allowed packages, this directory; no checkout, no virtualenv, no
    data, no cache. Everything read-only but a /tmp that each worker replaces with its own."""
    # Root of its own user namespace with CAP_SYS_ADMIN alone, which the zygote uses to
    # mount each worker's fresh /tmp; workers drop every capability before anything else.
    args = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--cap-add", "CAP_SYS_ADMIN", "--uid", "0", "--gid", "0"]
    for top in ("/usr", "/bin", "/lib", "/lib64", "/sbin"):
        p = Path(top)
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), top]
        elif p.exists():
            args += ["--ro-bind", top, top]
    for f in ("/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives"):
        args += ["--ro-bind-try", f, f]
    # The /tmp mount point first: an interpreter that lives under /tmp (a CI checkout) is
    # then bound on top of it instead of being hidden by it.
    args += ["--size", str(1 << 20), "--tmpfs", "/tmp"]
    for pre in python_prefixes():
        if not pre.startswith(("/usr/", "/bin/", "/lib")):
            args += ["--ro-bind", pre, pre]
    for pre in python_prefixes() + ["/usr", "/usr/local"]:
        for site in _site_dirs(pre):  # packages, not the standard library: hidden
            args += ["--tmpfs", site, "--remount-ro", site]
    for src, dst in package_binds(packages):
        args += ["--ro-bind", src, dst]
    args += ["--ro-bind", str(SANDBOX_DIR), INNER_DIR, "--proc", "/proc", "--dev", "/dev",
             "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/tmp", "--clearenv",
             "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
             "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONHASHSEED", "0",
             "--setenv", "PYTHONDONTWRITEBYTECODE", "1", "--"]
    return args


@functools.cache
def _bwrap_works() -> bool:
    if shutil.which("bwrap") is None:
        return False
    try:
        r = subprocess.run(_bwrap_args(1 << 20) + [interpreter(), "-c", "import pprint"],
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


