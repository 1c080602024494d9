"""The results directory: one Parquet shard per (model, benchmark, mode, round) + a manifest.

Layout::

    RESULTS/manifest.json                         completed units, with row counts + hashes
    RESULTS/config.yaml                           the config of the latest run
    RESULTS/samples/<model>/<benchmark>/init-r0.parquet
    RESULTS/samples/<model>/<benchmark>/refine-r1.parquet, explain_refine-r1.parquet, ...

A unit counts as done only when its shard exists *and* the manifest lists it with the same
fingerprint; shards are written first (tmp file + rename), the manifest after (also
tmp + rename), so a kill at any point leaves either a complete unit or a re-run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from selfdebug.evaluate.config import slug

SCHEMA = pa.schema([
    ("model", pa.string()),
    ("benchmark", pa.string()),
    ("task_id", pa.string()),
    ("sample_index", pa.int64()),
    ("mode", pa.string()),  # init | refine | explain_refine
    ("round", pa.int64()),  # 0 for init
    ("rendered_prompt", pa.string()),
    ("generated_text", pa.string()),
    ("explanation", pa.string()),
    ("code", pa.string()),  # the program that was executed
    ("status", pa.string()),
    ("passed", pa.int64()),
    ("total", pa.int64()),
    ("feedback", pa.string()),
    ("runtime", pa.float64()),
    ("outcomes", pa.string()),  # JSON list
    ("num_generated_tokens", pa.int64()),
    ("generation_error", pa.string()),
])
COLUMNS = tuple(SCHEMA.names)
MANIFEST = "manifest.json"


class FingerprintMismatch(RuntimeError):
    pass


def unit_key(model: str, benchmark: str, mode: str, round_: int) -> str:
    return f"{model}|{benchmark}|{mode}|{round_}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ResultStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest_path = self.root / MANIFEST
        self.manifest = self._load_manifest()

    def _load_manifest(self) -> dict:
        if self.manifest_path.is_file():
            return json.loads(self.manifest_path.read_text())
        return {"version": 1, "units": {}}

    def shard_path(self, model: str, benchmark: str, mode: str, round_: int) -> Path:
        return self.root / "samples" / slug(model) / slug(benchmark) / f"{mode}-r{round_}.parquet"

    def done(self, model: str, benchmark: str, mode: str, round_: int, fingerprint: str) -> bool:
        """True when the unit is complete; raises when it was made with other settings."""
        entry = self.manifest["units"].get(unit_key(model, benchmark, mode, round_))
        if entry is None or not (self.root / entry["path"]).is_file():
            return False
        if entry["fingerprint"] != fingerprint:
            raise FingerprintMismatch(
                f"{self.root}: {model} / {benchmark} / {mode} round {round_} was produced with "
                "different settings (model, benchmark, n, seed or sampling); use another "
                "output_dir or delete that directory to start over")
        return True

    def write(self, model: str, benchmark: str, mode: str, round_: int, rows: list[dict],
              fingerprint: str) -> Path:
        path = self.shard_path(model, benchmark, mode, round_)
        rows = sorted(rows, key=lambda r: (r["task_id"], r["sample_index"]))
        table = pa.Table.from_pylist([{c: r[c] for c in COLUMNS} for r in rows], schema=SCHEMA)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        data = sink.getvalue().to_pybytes()
        atomic_write_bytes(path, data)
        self.manifest["units"][unit_key(model, benchmark, mode, round_)] = {
            "model": model, "benchmark": benchmark, "mode": mode, "round": round_,
            "path": str(path.relative_to(self.root)), "rows": len(rows),
            "sha256": hashlib.sha256(data).hexdigest(), "fingerprint": fingerprint}
        self.save_manifest()
        return path

    def save_manifest(self) -> None:
        atomic_write_bytes(self.manifest_path,
                            (json.dumps(self.manifest, indent=1, sort_keys=True) + "\n").encode())

    def read(self, model: str, benchmark: str, mode: str, round_: int) -> list[dict]:
        entry = self.manifest["units"][unit_key(model, benchmark, mode, round_)]
        return pq.read_table(self.root / entry["path"]).to_pylist()

    def has(self, model: str, benchmark: str, mode: str, round_: int) -> bool:
        entry = self.manifest["units"].get(unit_key(model, benchmark, mode, round_))
        return entry is not None and (self.root / entry["path"]).is_file()

    def available(self) -> set[tuple]:
        """(model, benchmark, mode, round) of every complete unit."""
        return {(e["model"], e["benchmark"], e["mode"], e["round"])
                for e in self.manifest["units"].values() if (self.root / e["path"]).is_file()}

    def read_verdicts(self) -> list[dict]:
        """The key and verdict columns of every listed unit (what the metrics need)."""
        cols = ["model", "benchmark", "task_id", "sample_index", "mode", "round", "status"]
        out: list[dict] = []
        for entry in sorted(self.manifest["units"].values(), key=lambda e: e["path"]):
            path = self.root / entry["path"]
            if path.is_file():
                out += pq.read_table(path, columns=cols).to_pylist()
        return out
