"""Output shards and the manifest: the unit of resume.

A shard is a fixed chunk of problems (``shard_size`` in load order). When every problem of
a shard is finished, its rows are written as ``samples/shard-NNNNN.parquet`` and
``debug/shard-NNNNN.parquet`` (temp file + rename), and only then is the shard added to
``manifest.json`` (also temp + rename). The manifest is the truth: a re-run redoes every
shard it does not list and overwrites any stray file of such a shard, so each
(problem, sample) and each debug record appears exactly once.
"""

from __future__ import annotations

from pathlib import Path

from selfdebug import dataset

MANIFEST_VERSION = 1
EMPTY_MANIFEST = {"version": MANIFEST_VERSION, "fingerprint": None, "shards": {}}
SAMPLE_COLUMNS = dataset.SAMPLE_COLUMNS


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}"


def plan_shards(task_ids: list[str], shard_size: int) -> dict[int, list[str]]:
    """shard number → its task ids, chunks of ``shard_size`` in load order."""
    return {i // shard_size: task_ids[i:i + shard_size]
            for i in range(0, len(task_ids), shard_size)}


def write_shard(out_dir: str | Path, shard: int, samples: list[dict],
                debug: list[dict]) -> list[str]:
    """Write one shard's two files; returns their paths relative to ``out_dir``."""
    out = Path(out_dir)
    files = []
    key_s = lambda r: (r["task_id"], int(r["sample_index"]))  # noqa: E731
    key_d = lambda r: r["record_id"]  # noqa: E731
    for sub, rows, schema, key in (("samples", samples, dataset.SAMPLE_SCHEMA, key_s),
                                   ("debug", debug, dataset.DEBUG_SCHEMA, key_d)):
        rel = f"{sub}/{shard_name(shard)}.parquet"
        dataset.write_rows(out / rel, rows, schema, sort_key=key)
        files.append(rel)
    return files


def read_manifest(out_dir: str | Path) -> dict:
    return dataset.read_manifest(out_dir, EMPTY_MANIFEST)


def write_manifest(out_dir: str | Path, manifest: dict) -> None:
    dataset.write_manifest(out_dir, manifest)


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
    dataset.clean_temp_files(out_dir)
