"""One error convention for every `selfdebug` command.

Expected failures (bad config, bad data, an output path that cannot be written, a full
disk, a cluster that does not start) are printed as one or two lines — what went wrong,
naming the file, line, path or resource, then what to do — and exit with a code from the
table below. Anything else is a bug: its traceback is printed, with where the run's logs
are. `run_command` is the one place that turns exceptions into exit codes
(`selfdebug.cli` wraps every command in it); commands raise, they do not print errors.

Exit codes (README "Errors and exit codes"):

====  ==========================================================================
0     done
1     ran, but not everything finished (e.g. synthesis shards left to redo); re-run
2     bad input: config, data file, input or output path (checked before any
      cluster starts, so nothing was computed)
3     output could not be written (disk full, permissions) during the run;
      completed units are on disk, re-running the same command resumes
4     the Ray cluster could not be started or joined
70    a bug in selfdebug (traceback printed, with the run's log paths)
130   interrupted (Ctrl-C); completed units are kept, re-run to resume
====  ==========================================================================
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

EXIT_OK, EXIT_INCOMPLETE, EXIT_BAD_INPUT, EXIT_WRITE_FAILED, EXIT_CLUSTER = 0, 1, 2, 3, 4
EXIT_BUG, EXIT_INTERRUPTED = 70, 130

DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR,
                errno.EEXIST}


class UserError(Exception):
    """An expected failure: ``message`` names the thing (file and line, path, resource),
    ``fix`` says what to do."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, fix: str = ""):
        super().__init__(message)
        self.message, self.fix = message, fix

    def __str__(self) -> str:
        return f"{self.message}; {self.fix}" if self.fix else self.message


class InputError(UserError, ValueError):
    """Bad config, data or path, found before anything was computed (a ValueError, so
    callers that catch bad values keep working)."""


class InputNotFound(UserError, FileNotFoundError):
    """An input file or directory that does not exist (a FileNotFoundError for callers
    that catch those)."""


class OutputError(UserError):
    """Output could not be written during a run; what was completed is kept."""

    exit_code = EXIT_WRITE_FAILED


class ClusterError(UserError, RuntimeError):
    """The Ray cluster could not be started or joined."""

    exit_code = EXIT_CLUSTER


# ------------------------------------------------------------------ log paths
_LOGS: dict[str, str] = {}


def note_log(label: str, path: str | Path) -> None:
    """Remember where this run writes logs (printed with a bug's traceback)."""
    _LOGS[label] = str(path)


def log_paths() -> dict[str, str]:
    return dict(_LOGS)


# ------------------------------------------------------------------ path checks
def _is_uri(path) -> bool:
    return "://" in str(path)


def _nearest_existing(p: Path) -> Path:
    for q in (p, *p.parents):
        if q.exists():
            return q
    return Path("/")


def _check_creatable(p: Path, what: str) -> None:
    """The first existing ancestor of ``p`` must be a writable directory."""
    base = _nearest_existing(p.parent if not p.exists() else p)
    if not base.is_dir():
        raise InputError(f"{what} {p}: {base} is a file, not a directory",
                         "give a path whose parent folders are directories")
    if not os.access(base, os.W_OK | os.X_OK):
        raise InputError(f"{what} {p}: cannot create files in {base} (permission denied)",
                         "choose a writable location")


def check_output_dir(path: str | Path, what: str = "out_dir") -> None:
    """Refuse, before anything starts, an output directory that cannot be created or written
    (remote URIs are left to their filesystem)."""
    if not path or _is_uri(path):
        return
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{what} {p} is a file, not a directory",
                         "give a directory path (or move the file away)")
    _check_creatable(p, what)


def check_output_file(path: str | Path, what: str = "--out") -> None:
    """Refuse an output file path that is a directory or cannot be created."""
    if not path or _is_uri(path):
        return
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{what} {p} is a directory", "give a file path")
    _check_creatable(p, what)


def check_input_dir(path: str | Path, what: str) -> None:
    if not path or _is_uri(path):
        return
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} {p} does not exist", "check the path (relative paths are "
                         f"taken from {Path.cwd()})")
    if not p.is_dir():
        raise InputError(f"{what} {p} is a file, not a directory", "give a directory")


# ------------------------------------------------------------------ classification
def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it: ``__cause__``/``__context__`` and a Ray task error's
    ``cause`` (an OSError inside a Ray task or actor reaches the driver wrapped)."""
    seen: set[int] = set()
    todo = [exc]
    while todo and len(seen) < 20:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]


def _os_error_text(e: OSError) -> tuple[str, int, str] | None:
    where = f" {e.filename}" if e.filename else ""
    if e.errno in DISK_FULL:
        return (f"disk full: could not write{where} ({os.strerror(e.errno)})", EXIT_WRITE_FAILED,
                "free space (or choose another out_dir) and re-run the same command: "
                "completed units are kept and the run resumes from them")
    if e.errno in NOT_WRITABLE and e.filename:
        return (f"cannot write{where}: {e.strerror or os.strerror(e.errno)}", EXIT_WRITE_FAILED,
                "check the path and its permissions, then re-run the same command")
    return None


def describe(exc: BaseException) -> tuple[str, int, str] | None:
    """(message, exit code, fix) for an expected failure, None for a bug."""
    from selfdebug.config import ConfigError

    for e in _chain(exc):
        if isinstance(e, UserError):
            return e.message, e.exit_code, e.fix
        if isinstance(e, ConfigError):
            return f"config error: {e}", EXIT_BAD_INPUT, ""
        if isinstance(e, OSError) and (text := _os_error_text(e)) is not None:
            return text
    if isinstance(exc, FileNotFoundError):  # an input named by the user
        return str(exc), EXIT_BAD_INPUT, ""
    return None


def print_error(prog: str, message: str, fix: str = "") -> None:
    print(f"{prog}: error: {message}", file=sys.stderr)
    if fix:
        print(f"  fix: {fix}", file=sys.stderr)


def report_expected(prog: str, exc: BaseException, code: int = EXIT_BAD_INPUT) -> int:
    """Print an exception a command knows to be the user's (e.g. a ValueError from
    validation) the convention's way: its own exit code for a UserError, else ``code``."""
    if describe(exc) is not None:
        return report(prog, exc)
    print_error(prog, str(exc))
    return code


def report(prog: str, exc: BaseException) -> int:
    """Print ``exc`` the convention's way; returns the exit code."""
    found = describe(exc)
    if found is None:
        traceback.print_exception(exc)
        logs = "; ".join(f"{k}: {v}" for k, v in _LOGS.items()) or "none written"
        print(f"{prog}: internal error ({type(exc).__name__}) — a bug in selfdebug; please "
              f"report it with the traceback above. Logs: {logs}", file=sys.stderr)
        return EXIT_BUG
    message, code, fix = found
    print_error(prog, message, fix)
    return code


def run_command(prog: str, main: Callable[[list[str]], int | None], argv: list[str]) -> int:
    """Run a command's ``main(argv)``: its return value is the exit code; an exception is
    reported as above."""
    try:
        return int(main(argv) or 0)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; completed units are kept, re-run the same command to "
              "resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BaseException as e:  # noqa: BLE001  the one place exceptions become exit codes
        return report(prog, e)
