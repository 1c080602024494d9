"""Typed job configs: a dataclass per job, loaded from YAML, overridden with key=value."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    pass


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
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown key(s) {unknown}; known: {sorted(names)}"
        )
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        data = data.setdefault(p, {})
        if not isinstance(data, dict):
            raise ConfigError(f"override {key}: {p} is not a section")
    data[parts[-1]] = value


def load_config(cls: type[T], path: str | Path | None = None, overrides=()) -> T:
    """Build ``cls`` from a YAML file (optional) and ``key.sub=value`` overrides."""
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
    return _build(cls, data, "")


def add_config_arguments(parser: argparse.ArgumentParser, example: str, group=None) -> None:
    """A job CLI's ``--config FILE`` (in ``group`` if given) and ``key=value`` overrides."""
    (group or parser).add_argument("--config", help=f"YAML file ({example})")
    parser.add_argument("overrides", nargs="*", help="key=value settings over the file")


def load_job_config(cls: type[T], path, overrides, prog: str) -> T | None:
    """``load_config`` (+ ``validate()`` where the config has one) for a job's CLI: None,
    with the problem printed, when the config is bad."""
    try:
        cfg = load_config(cls, path, overrides)
        if hasattr(cfg, "validate"):
            cfg.validate()
    except (ValueError, TypeError) as e:  # ConfigError is a ValueError
        print(f"{prog}: config error: {e}", file=sys.stderr)
        return None
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


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
