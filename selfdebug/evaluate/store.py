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

from pathlib import Path

import pyarrow.parquet as pq

from selfdebug import dataset
from selfdebug.dataset import atomic_write_bytes  # noqa: F401  (evaluate.pipeline writes config.yaml with it)
from selfdebug.evaluate.config import slug

SCHEMA = dataset.EVAL_SCHEMA
COLUMNS = dataset.EVAL_COLUMNS
MANIFEST = dataset.MANIFEST
EMPTY_MANIFEST = {"version": 1, "units": {}}


class FingerprintMismatch(RuntimeError):
    pass


def unit_key(model: str, benchmark: str, mode: str, round_: int) -> str:
    return f"{model}|{benchmark}|{mode}|{round_}"


class ResultStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest_path = self.root / MANIFEST
        self.manifest = dataset.read_manifest(self.root, EMPTY_MANIFEST)

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
                "out_dir or delete that directory to start over")
        return True

    def write(self, model: str, benchmark: str, mode: str, round_: int, rows: list[dict],
              fingerprint: str) -> Path:
        path = self.shard_path(model, benchmark, mode, round_)
        missing = sorted({c for r in rows for c in COLUMNS if c not in r})
        if missing:
            raise KeyError(f"evaluation rows lack column(s) {missing}")
        written = dataset.write_rows(path, rows, SCHEMA,
                                     sort_key=lambda r: (r["task_id"], r["sample_index"]))
        self.manifest["units"][unit_key(model, benchmark, mode, round_)] = {
            "model": model, "benchmark": benchmark, "mode": mode, "round": round_,
            "path": str(path.relative_to(self.root)), "fingerprint": fingerprint, **written}
        self.save_manifest()
        return path

    def save_manifest(self) -> None:
        dataset.write_manifest(self.root, self.manifest)

    def read(self, model: str, benchmark: str, mode: str, round_: int) -> list[dict]:
        entry = self.manifest["units"][unit_key(model, benchmark, mode, round_)]
        return pq.read_table(self.root / entry["path"]).to_pylist()

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
