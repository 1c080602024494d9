"""The dataset contract: Arrow schemas, the one shard writer / manifest, and the readers.

Every stage that writes rows to disk writes them here, with a fixed schema per kind:
- ``SAMPLE_SCHEMA``: one unique initial sample and its verdict (synthesis ``samples/``);
- ``DEBUG_SCHEMA``: one debug record, a wrong sample + one refinement attempt and its
  verdict (synthesis ``debug/``; DESIGN.md "Data model");
- ``EVAL_SCHEMA``: one judged evaluation sample (evaluation ``samples/<model>/<bench>/``).

Writes are atomic (temp file in the same directory, fsync, rename), and a directory's
``manifest.json`` (also written atomically, after the shards) is the truth about what is
complete: readers of a synthesis output read only the shards its manifest lists, so files
of a killed run's unfinished shard are never read. `read_debug_records` and `read_samples`
read several synthesis outputs at once (SFT and RL train on their union).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "manifest.json"

_S, _I, _F, _B = pa.string(), pa.int64(), pa.float64(), pa.bool_()

SAMPLE_SCHEMA = pa.schema([
    ("task_id", _S), ("source", _S), ("prompt", _S), ("entry_point", _S),
    ("sample_index", _I), ("code", _S), ("status", _S), ("passed", _I), ("total", _I),
    ("feedback", _S), ("runtime", _F), ("outcomes", _S),  # outcomes: JSON list
    ("duplicates", _I),  # how many of the n samples produced this program
    ("completion", _S), ("sample_tokens", _I), ("generation_error", _S),
    ("sample_model", _S), ("sampling_params", _S), ("pipeline_version", _S),
])

DEBUG_SCHEMA = pa.schema([
    ("record_id", _S),  # f"{task_id}/{sample_index}/{mode}/{attempt}"
    ("task_id", _S), ("source", _S), ("prompt", _S), ("entry_point", _S),
    ("sample_index", _I), ("wrong_code", _S), ("wrong_status", _S), ("wrong_passed", _I),
    ("wrong_total", _I),
    ("feedback", _S),  # execution feedback of the wrong code, as the model read it
    ("mode", _S),  # "refine" | "explain_refine"
    ("attempt", _I),
    ("explanation", _S),  # "" for refine-only
    ("refined_code", _S), ("refined_status", _S), ("refined_passed", _I),
    ("refined_total", _I), ("refined_feedback", _S),
    ("correct", _B),  # the refined code passed every test
    ("sample_model", _S), ("refine_model", _S),
    ("sampling_params", _S),  # JSON
    ("pipeline_version", _S),
])

EVAL_SCHEMA = pa.schema([
    ("model", _S), ("benchmark", _S), ("task_id", _S), ("sample_index", _I),
    ("mode", _S),  # init | refine | explain_refine
    ("round", _I),  # 0 for init
    ("rendered_prompt", _S), ("generated_text", _S), ("explanation", _S),
    ("code", _S),  # the program that was executed
    ("status", _S), ("passed", _I), ("total", _I), ("feedback", _S), ("runtime", _F),
    ("outcomes", _S),  # JSON list
    ("num_generated_tokens", _I), ("generation_error", _S),
])

SAMPLE_COLUMNS: tuple[str, ...] = tuple(SAMPLE_SCHEMA.names)
DEBUG_RECORD_COLUMNS: tuple[str, ...] = tuple(DEBUG_SCHEMA.names)
EVAL_COLUMNS: tuple[str, ...] = tuple(EVAL_SCHEMA.names)


# ------------------------------------------------------------------ writing
def table(rows: Iterable[dict], schema: pa.Schema) -> pa.Table:
    """Rows → a table with exactly ``schema``'s columns and types (missing keys are null)."""
    return pa.Table.from_pylist([{c: r.get(c) for c in schema.names} for r in rows],
                                schema=schema)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (temp file beside it, fsync, rename). Temp names
    start with "." and end in ".tmp": readers globbing ``*.parquet`` never see them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None and e.errno:  # name the file
            raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from e
        raise


def write_rows(path: str | Path, rows: Iterable[dict], schema: pa.Schema,
               sort_key=None) -> dict:
    """Atomically write ``rows`` as one Parquet file with ``schema`` (sorted by ``sort_key``
    for a content that does not depend on arrival order); returns {"rows", "sha256"}."""
    rows = list(rows)
    if sort_key is not None:
        rows.sort(key=sort_key)
    sink = pa.BufferOutputStream()
    pq.write_table(table(rows, schema), sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    atomic_write_bytes(path, data)
    return {"rows": len(rows), "sha256": hashlib.sha256(data).hexdigest()}


def parse_manifest(text: bytes | str, where: str) -> dict:
    """A manifest's content; a damaged one is an error naming the file and the way out
    (it is written atomically, so damage means something other than a crash wrote it)."""
    from selfdebug.errors import InputError

    try:
        manifest = json.loads(text)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("shards", {}), dict):
            raise ValueError("expected an object with a 'shards' mapping")
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{where} is not a valid manifest ({e})",
                         "restore it from a backup, or delete it to redo every shard of "
                         "that output (or use another out_dir)") from None
    return manifest


def read_manifest(root: str | Path, empty: dict) -> dict:
    """``root``/manifest.json, or a copy of ``empty`` when there is none yet."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return json.loads(json.dumps(empty))
    return parse_manifest(path.read_bytes(), str(path))


def write_manifest(root: str | Path, manifest: dict) -> None:
    """Atomically replace ``root``/manifest.json (call after the shards it lists are written)."""
    atomic_write_bytes(Path(root) / MANIFEST,
                       (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())


def clean_temp_files(root: str | Path) -> int:
    """Remove temp files a killed run left anywhere under ``root``; returns how many."""
    root = Path(root)
    if not root.is_dir():
        return 0
    stale = list(root.rglob(".*.tmp"))
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


# ------------------------------------------------------------------ reading
def _filesystem(uri: str):
    import pyarrow.fs as pafs

    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), str(Path(uri).resolve())


def _read_bytes(fs, path: str) -> bytes | None:
    import pyarrow.fs as pafs

    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return f.read()


def synthesis_files(out_dir: str, sub: str) -> tuple[object, list[str]]:
    """(filesystem, sorted Parquet paths) of ``sub`` ("debug" / "samples") of one synthesis
    output (local dir or s3:// / gs:// URI). With a manifest: only the shards it lists (a
    killed run's partial shard is not data); without one (a dataset assembled by other
    means): every ``*.parquet`` under ``sub``."""
    import pyarrow.fs as pafs

    fs, root, text = open_synthesis_output(out_dir)
    if text is not None:
        manifest = parse_manifest(text, f"{out_dir}/{MANIFEST}")
        files = [f"{root}/{f}" for e in manifest.get("shards", {}).values()
                 for f in e.get("files", []) if f.startswith(f"{sub}/")]
    else:
        infos = fs.get_file_info(pafs.FileSelector(f"{root}/{sub}", allow_not_found=True))
        files = [i.path for i in infos if i.path.endswith(".parquet")]
    return fs, sorted(files)


def open_synthesis_output(out_dir: str) -> tuple[object, str, bytes | None]:
    """(filesystem, root, manifest bytes or None) of a synthesis output; an error naming the
    directory when it is missing or holds no synthesis output (checked before any training
    starts: `check_synthesis_outputs`)."""
    import pyarrow.fs as pafs

    from selfdebug.errors import InputError, InputNotFound

    fs, root = _filesystem(out_dir)
    kind = fs.get_file_info(root).type
    if kind == pafs.FileType.NotFound:
        raise InputNotFound(f"synthesis output {out_dir} is not a directory: it does not exist",
                         "give the out_dir of a `selfdebug synth` run in data_dirs")
    if kind != pafs.FileType.Directory:
        raise InputError(f"synthesis output {out_dir} is not a directory",
                         "give the out_dir of a `selfdebug synth` run in data_dirs")
    text = _read_bytes(fs, f"{root}/{MANIFEST}")
    # examples/: ready-made SFT examples (the demo's pretraining data, train.examples)
    if text is None and not any(fs.get_file_info(f"{root}/{sub}").type == pafs.FileType.Directory
                                for sub in ("debug", "samples", "examples")):
        raise InputError(f"{out_dir} is not a synthesis output (no {MANIFEST}, no debug/, "
                         "samples/ or examples/ directory)",
                         "give the out_dir of a `selfdebug synth` run in data_dirs")
    return fs, root, text


def check_synthesis_outputs(dirs: list[str]) -> None:
    """Each of ``dirs`` exists and is a synthesis output with a readable manifest."""
    for d in dirs:
        _, _, text = open_synthesis_output(str(d))
        if text is not None:
            parse_manifest(text, f"{d}/{MANIFEST}")


def _read(dirs: str | list[str], sub: str, columns: list[str] | None) -> list[dict]:
    dirs = [dirs] if isinstance(dirs, str | Path) else list(dirs)
    if not dirs:
        raise ValueError("no synthesis output directories given")
    out: list[dict] = []
    for d in dirs:
        fs, files = synthesis_files(str(d), sub)
        for f in files:
            try:
                rows = pq.read_table(f, filesystem=fs, columns=columns).to_pylist()
            except (pa.ArrowException, OSError) as e:
                from selfdebug.errors import InputError

                raise InputError(f"cannot read {f} ({type(e).__name__}: {e})",
                                 "restore the file, or re-run the synthesis that wrote it "
                                 "after removing its shard from manifest.json") from None
            for r in rows:
                r["dataset"] = str(d)  # which output a row came from (ids repeat across them)
            out += rows
    return out


def read_debug_records(dirs: str | list[str], columns: list[str] | None = None) -> list[dict]:
    """Every committed debug record of one or several synthesis outputs (``DEBUG_SCHEMA``
    columns + ``dataset``: the directory it came from), in (directory, file) order."""
    return _read(dirs, "debug", columns)


def read_samples(dirs: str | list[str], columns: list[str] | None = None) -> list[dict]:
    """Every committed initial sample of one or several synthesis outputs (``SAMPLE_SCHEMA``
    columns + ``dataset``)."""
    return _read(dirs, "samples", columns)
