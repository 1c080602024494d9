"""Getting packed rows to each training worker, with or without Ray.

The driver builds examples (small: text only) and hands them to Ray Data, which tokenizes
and packs them in parallel; each Ray Train worker reads its shard with
``ray.train.get_dataset_shard``. Order is preserved end to end, so a shard holds the same
rows in every run: that is what lets a resumed run continue at the same data position.
Without Ray (torchrun), or with ``ingest: worker``, each rank does the same work locally
and keeps every world-th row (with one worker: the rows Ray Data would give it).

A worker keeps its shard in memory (SFT sets are small: LeDex's is ≈ 50 k examples) and
shuffles it per epoch with a seeded permutation, so "step k" always means the same batches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from selfdebug.train.examples import raw_examples, split_examples, tokenize_rows
from selfdebug.train.packing import pack, unpacked

ROW_COLUMNS = ("row_id", "input_ids", "labels", "position_ids", "example_ids")
PACK_WINDOW = 512  # examples packed together (one Ray Data batch)


def resolve_data_dirs(cfg, scratch: Path) -> list[str]:
    """``cfg.data_dirs`` (dirs or URIs), or a fixture dataset built from MBPP when empty."""
    if cfg.data_dirs:
        return list(cfg.data_dirs)
    from selfdebug.train.fixture_data import build_fixture_dataset, default_mbpp_path

    mbpp = Path(cfg.mbpp_path) if cfg.mbpp_path else default_mbpp_path()
    if mbpp is None or not mbpp.is_file():
        raise FileNotFoundError("data_dirs is empty and no MBPP file for the fixture dataset "
                                "(set data_dirs, mbpp_path or SELFDEBUG_SHARED_DATA)")
    return [str(build_fixture_dataset(scratch / "fixture-data", mbpp, cfg.fixture_problems))]


def build_examples(cfg, scratch: Path) -> tuple[list[dict], list[dict]]:
    """(train, validation) example dicts for ``cfg`` (mixed, split by problem)."""
    examples = raw_examples(resolve_data_dirs(cfg, scratch), cfg.one_refinement_per_sample)
    train, val = split_examples(examples, cfg)
    if not train:
        raise ValueError("no training examples (no correct refinements or passing samples?)")
    return train, val


def rows_from_examples(examples: list[dict], tokenizer_path: str, max_seq_len: int,
                       packing: bool, window: int | None = None) -> list[dict]:
    """Tokenize and pack (or not) a list of examples into training rows; with ``window``,
    packed ``window`` examples at a time, as the Ray Data path does."""
    if window:
        return [row for i in range(0, len(examples), window)
                for row in rows_from_examples(examples[i:i + window], tokenizer_path,
                                              max_seq_len, packing)]
    tokenized = tokenize_rows(examples, tokenizer_path, max_seq_len)
    return pack(tokenized, max_seq_len) if packing else unpacked(tokenized)


def _rows_table(rows: list[dict]):
    import pyarrow as pa

    schema = pa.schema([("row_id", pa.string()), ("input_ids", pa.list_(pa.int32())),
                        ("labels", pa.list_(pa.int32())), ("position_ids", pa.list_(pa.int32())),
                        ("example_ids", pa.list_(pa.string()))])
    return pa.Table.from_pylist([{k: r[k] for k in ROW_COLUMNS} for r in rows], schema=schema)


def _tokenize_and_pack(batch, tokenizer_path: str, max_seq_len: int, packing: bool):
    return _rows_table(rows_from_examples(batch.to_pylist(), tokenizer_path, max_seq_len,
                                          packing))


def ray_datasets(train: list[dict], val: list[dict], cfg, tokenizer_path: str,
                 pack_window: int = PACK_WINDOW) -> dict:
    """Ray Datasets of packed rows; ``pack_window`` examples are packed together."""
    import pyarrow as pa
    import ray.data

    out = {}  # (order is preserved where the datasets run: see data_config)
    for name, examples in (("train", train), ("val", val)):
        if not examples:
            continue
        ds = ray.data.from_arrow(pa.Table.from_pylist(examples))
        out[name] = ds.map_batches(
            _tokenize_and_pack, batch_size=pack_window, batch_format="pyarrow",
            fn_kwargs={"tokenizer_path": tokenizer_path, "max_seq_len": cfg.max_seq_len,
                       "packing": cfg.packing},
            num_cpus=0.5,  # leave room beside the training workers on small machines
        )
    return out


def data_config():
    """Split every dataset equally and in order among the workers (deterministic shards)."""
    from ray.data import ExecutionOptions
    from ray.train import DataConfig

    return DataConfig(datasets_to_split="all",
                      execution_options=ExecutionOptions(preserve_order=True))


def _as_row(r: dict) -> dict:
    return {"row_id": str(r["row_id"]), "example_ids": [str(e) for e in r["example_ids"]],
            **{k: np.asarray(r[k], dtype=np.int64) for k in ("input_ids", "labels",
                                                                "position_ids")}}


def load_shards(cfg, rank: int, world: int, tokenizer_path: str, scratch: Path,
                from_ray_data: bool) -> dict[str, list[dict]]:
    """This worker's "train" and "val" rows, each in a stable order: its Ray Data shards,
    or built here from ``cfg.data_dirs`` (read once for both)."""
    out = {}
    if from_ray_data:
        import ray.train

        for name in ("train", "val"):
            try:
                shard = ray.train.get_dataset_shard(name)
            except KeyError:  # Ray Train v2: a dataset not given (no validation examples)
                shard = None
            rows = [] if shard is None else [_as_row(r) for r in shard.iter_rows()]
            out[name] = sorted(rows, key=lambda r: r["row_id"])
    else:
        for name, examples in zip(("train", "val"), build_examples(cfg, scratch)):
            all_rows = rows_from_examples(examples, tokenizer_path, cfg.max_seq_len,
                                          cfg.packing, PACK_WINDOW)
            all_rows.sort(key=lambda r: r["row_id"])
            per_rank = len(all_rows) // world  # equal shards, as Ray's equal split
            out[name] = [_as_row(r) for r in all_rows[rank::world][:per_rank]]
    return out


def epoch_order(n_rows: int, seed: int, epoch: int, rank: int) -> np.ndarray:
    """The seeded row permutation of one epoch on one rank."""
    return np.random.default_rng([seed, epoch, rank]).permutation(n_rows)


def micro_batches(rows: list[dict], order: np.ndarray, micro_batch_size: int,
                  start: int = 0):
    """Micro-batches (lists of rows) of one epoch, from micro-batch index ``start`` on."""
    for i in range(start * micro_batch_size, len(order) - micro_batch_size + 1,
                   micro_batch_size):
        yield [rows[j] for j in order[i:i + micro_batch_size]]
