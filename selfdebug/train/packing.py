"""Sequence packing: several examples per row, each attending only to itself.

A packed row concatenates examples and restarts ``position_ids`` at 0 for each one.
transformers (≥ 4.56) turns restarting position ids into a block-diagonal causal mask when
no ``attention_mask`` is passed and there is no KV cache (``use_cache=False``); flash-attn
varlen kernels read the same position ids. Padding at the end of a row is one more
segment (positions 0..k, labels -100), so it never mixes with real tokens either.
"""

from __future__ import annotations

from selfdebug.train.examples import IGNORE


def pack(examples: list[dict], max_len: int) -> list[dict]:
    """First-fit decreasing into rows of at most ``max_len`` tokens (deterministic)."""
    order = sorted(examples, key=lambda e: (-len(e["input_ids"]), e["example_id"]))
    bins: list[list[dict]] = []
    room: list[int] = []
    for e in order:
        n = len(e["input_ids"])
        for i, free in enumerate(room):
            if n <= free:
                bins[i].append(e)
                room[i] -= n
                break
        else:
            bins.append([e])
            room.append(max_len - n)
    return [join(b) for b in bins]


def join(examples: list[dict]) -> dict:
    """One row from ``examples``: tokens and labels concatenated, positions restarting."""
    row = {"input_ids": [], "labels": [], "position_ids": [], "example_ids": []}
    for e in examples:
        row["input_ids"] += list(e["input_ids"])
        row["labels"] += list(e["labels"])
        row["position_ids"] += list(range(len(e["input_ids"])))
        row["example_ids"].append(e["example_id"])
    row["row_id"] = row["example_ids"][0]  # a stable id for ordering rows
    return row


def unpacked(examples: list[dict]) -> list[dict]:
    """One example per row (``packing: false``)."""
    return [join([e]) for e in sorted(examples, key=lambda e: e["example_id"])]


def collate(rows: list[dict], pad_id: int):
    """Tensors for a micro-batch: padded to the longest row, padding as its own segment."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids, labels, pos = [], [], []
    for r in rows:
        n = len(r["input_ids"])
        pad = width - n
        ids.append(list(r["input_ids"]) + [pad_id] * pad)
        labels.append(list(r["labels"]) + [IGNORE] * pad)
        pos.append(list(r["position_ids"]) + list(range(pad)))
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "position_ids": torch.tensor(pos, dtype=torch.long),
    }
