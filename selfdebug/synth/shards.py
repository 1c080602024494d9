"""Output shards and the manifest: the unit of resume.

A shard is a fixed chunk of problems (``shard_size`` in load order). When every problem of
a shard is finished, its rows are written as ``samples/shard-NNNNN.parquet`` and
``debug/shard-NNNNN.parquet`` (temp file + rename), and only then is the shard added to
``manifest.json`` (also temp + rename). The manifest is the truth: a re-run redoes every
shard it does not list and overwrites any stray file of such a shard, so each
(problem, sample) and each debug record appears exactly once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from selfdebug.schema import DEBUG_RECORD_COLUMNS

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1

_INT = ("sample_index", "wrong_passed", "wrong_total", "attempt", "refined_passed",
        "refined_total", "passed", "total", "shard", "sample_tokens", "duplicates")
_FLOAT = ("runtime",)
_BOOL = ("correct",)

# The columns of samples/*.parquet, in order (every unique initial sample).
SAMPLE_COLUMNS = (
    "task_id", "source", "prompt", "entry_point", "sample_index", "code", "status", "passed",
    "total", "feedback", "runtime", "outcomes", "duplicates", "completion", "sample_tokens",
    "generation_error", "sample_model", "sampling_params", "pipeline_version",
)


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}"


def plan_shards(task_ids: list[str], shard_size: int) -> dict[int, list[str]]:
    """shard number → its task ids, chunks of ``shard_size`` in load order."""
    return {i // shard_size: task_ids[i:i + shard_size]
            for i in range(0, len(task_ids), shard_size)}


def _type(name: str) -> pa.DataType:
    if name in _INT:
        return pa.int64()
    if name in _FLOAT:
        return pa.float64()
    if name in _BOOL:
        return pa.bool_()
    return pa.string()


def table(rows: list[dict], columns: tuple[str, ...]) -> pa.Table:
    """Rows → a table with exactly ``columns`` and fixed types (same schema every shard)."""
    schema = pa.schema([(c, _type(c)) for c in columns])
    return pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows], schema=schema)


def _atomic_write_table(tbl: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")  # not *.parquet: readers never see it
    pq.write_table(tbl, tmp)
    os.replace(tmp, path)


def write_shard(out_dir: str | Path, shard: int, samples: list[dict],
                debug: list[dict]) -> list[str]:
    """Write one shard's two files; returns their paths relative to ``out_dir``."""
    out = Path(out_dir)
    files = []
    key_s = lambda r: (r["task_id"], int(r["sample_index"]))  # noqa: E731
    key_d = lambda r: r["record_id"]  # noqa: E731
    for sub, rows, columns, key in (("samples", samples, SAMPLE_COLUMNS, key_s),
                                    ("debug", debug, DEBUG_RECORD_COLUMNS, key_d)):
        (out / sub).mkdir(parents=True, exist_ok=True)
        path = out / sub / f"{shard_name(shard)}.parquet"
        _atomic_write_table(table(sorted(rows, key=key), columns), path)
        files.append(f"{sub}/{path.name}")
    return files


def read_manifest(out_dir: str | Path) -> dict:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return {"version": MANIFEST_VERSION, "fingerprint": None, "shards": {}}
    return json.loads(path.read_text())


def write_manifest(out_dir: str | Path, manifest: dict) -> None:
    path = Path(out_dir) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def check_resume(manifest: dict, fingerprint: str, plan: dict[int, list[str]]) -> None:
    """Refuse to resume into an out_dir written with other settings or other shards."""
    if manifest.get("fingerprint") not in (None, fingerprint):
        raise ValueError(
            f"out_dir was written with other settings (fingerprint "
            f"{manifest['fingerprint']} ≠ {fingerprint}); use another out_dir or overwrite=true")
    for key, entry in manifest.get("shards", {}).items():
        shard = int(key)
        if shard in plan and plan[shard] != entry["task_ids"]:
            raise ValueError(f"out_dir shard {key} holds other problems than this run's "
                             "plan; use another out_dir or overwrite=true")


def pending_shards(manifest: dict, plan: dict[int, list[str]]) -> list[int]:
    done = {int(k) for k in manifest.get("shards", {})}
    return [s for s in sorted(plan) if s not in done]


def clean_temp_files(out_dir: str | Path) -> None:
    """Temp files a killed run left behind."""
    for sub in ("samples", "debug", "."):
        d = Path(out_dir) / sub
        if d.is_dir():
            for p in d.glob(".*.tmp"):
                p.unlink(missing_ok=True)
