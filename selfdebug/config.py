"""Typed job configs: a dataclass per job, loaded from YAML, overridden with key=value."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from selfdebug.sandbox.judge import SandboxConfig

T = TypeVar("T")

# Keys that were renamed: a config still using the old name gets an error naming the new one.
RENAMED = {
    "output_dir": "out_dir",
    "data_dir": "data_dirs (a list of synthesis outputs)",
    "sandbox_actors": "sandbox.actors",
    "sandbox_workers_per_actor": "sandbox.workers_per_actor",
    "sandbox_cpus_per_actor": "sandbox.cpus_per_actor",
    "sandbox_batch_size": "sandbox.batch_size",
}


class ConfigError(ValueError):
    pass


@dataclass
class SandboxSection(SandboxConfig):
    """The ``sandbox:`` section of every job: how programs are judged (`SandboxConfig`'s
    fields) and the pool of sandbox actors that judges them."""

    actors: int = 1  # sandbox actors (per execution stage where a job has several)
    workers_per_actor: int = 1  # fork-server workers inside each actor
    cpus_per_actor: float = 0.5  # Ray CPUs each actor reserves (fractional: DESIGN.md)
    batch_size: int = 16  # rows per Ray Data batch sent to an actor

    def validate(self) -> None:
        if self.actors < 1 or self.workers_per_actor < 1 or self.batch_size < 1:
            raise ValueError("sandbox.actors, sandbox.workers_per_actor and "
                             "sandbox.batch_size must be ≥ 1")
        if self.cpus_per_actor <= 0:
            raise ValueError(f"sandbox.cpus_per_actor must be > 0, got {self.cpus_per_actor}")

    def judge_config(self):
        """The `SandboxConfig` part alone (what a judge needs)."""
        return SandboxConfig(**{f.name: getattr(self, f.name)
                                for f in dataclasses.fields(SandboxConfig)})

    def pool_kwargs(self) -> dict:
        return {"actors": self.actors, "workers_per_actor": self.workers_per_actor,
                "cpus_per_actor": self.cpus_per_actor}


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where) if len(args) == 1 else value
    if origin in (list, tuple) and isinstance(value, str):
        value = [v for v in value.split(",") if v != ""]
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        return tuple(value)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def _build(cls: type[T], data: dict[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    renamed = [f"{k!r} is now {RENAMED[k]!r}" for k in unknown if k in RENAMED]
    if renamed:
        raise ConfigError(f"{where or cls.__name__}: renamed key(s): {'; '.join(renamed)}")
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown key(s) {unknown}; known: {sorted(names)}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        at = f"{where}.{k}" if where else k
        default = fields[k].default_factory
        if isinstance(v, dict) and default is not dataclasses.MISSING:
            base = default()
            if dataclasses.is_dataclass(base):
                # a partial section keeps the job's own defaults for the keys it leaves out
                # (e.g. eval's sandbox.cpus_per_actor), not the section class's
                kwargs[k] = dataclasses.replace(base, **_convert_keys(type(base), v, at))
                continue
        kwargs[k] = _convert(hints[k], v, at)
    return cls(**kwargs)


def _convert_keys(cls: type, data: dict, where: str) -> dict:
    """``data``'s values converted to ``cls``'s field types (unknown keys are an error)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(names)}")
    return {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        data = data.setdefault(p, {})
        if not isinstance(data, dict):
            raise ConfigError(f"override {key}: {p} is not a section")
    data[parts[-1]] = value


def validate(cfg: Any) -> None:
    """Call ``validate()`` on ``cfg`` and on every dataclass section inside it that has one."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and hasattr(value, "validate"):
            value.validate()
    if hasattr(cfg, "validate"):
        cfg.validate()


def load_config(cls: type[T], path: str | Path | None = None, overrides=()) -> T:
    """Build ``cls`` from a YAML file (optional) and ``key.sub=value`` overrides, then
    validate it (every job config's ``validate()``, and its sections')."""
    data: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level")
        data = loaded
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        _set_dotted(data, key.strip(), yaml.safe_load(raw) if raw != "" else "")
    cfg = _build(cls, data, "")
    validate(cfg)
    return cfg


def add_config_arguments(parser: argparse.ArgumentParser, example: str, group=None) -> None:
    """A job CLI's ``--config FILE`` (in ``group`` if given) and ``key=value`` overrides."""
    (group or parser).add_argument("--config", help=f"YAML file ({example})")
    parser.add_argument("overrides", nargs="*", help="key=value settings over the file")


def load_job_config(cls: type[T], path, overrides, prog: str) -> T | None:
    """``load_config`` for a job's CLI: None, with the problem printed, when the config is
    bad."""
    try:
        cfg = load_config(cls, path, overrides)
    except (ValueError, TypeError) as e:  # ConfigError is a ValueError
        print(f"{prog}: config error: {e}", file=sys.stderr)
        return None
    return cfg


def resolve_model(ref: str) -> str:
    """A job's ``model`` reference → what vLLM / transformers load: ``tiny`` (or "") → the
    tiny local Llama (built once under the repository's .cache/); an existing local
    directory → its absolute path (Ray workers run in other working directories); anything
    else → unchanged (a hub name)."""
    if ref in ("", "tiny"):
        from selfdebug.llm.tiny_model import build_tiny_model

        return str(build_tiny_model(Path(__file__).resolve().parents[1] / ".cache" / "tiny-model"))
    path = Path(ref).expanduser()
    return str(path.resolve()) if path.is_dir() else ref
