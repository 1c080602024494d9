"""SFT examples from the synthesis output: chat messages + the answer to learn, then tokens.

Three kinds (DESIGN.md, "Prompts"):
- ``refine``: problem → wrong code (assistant) → feedback + "fix it" → correct code;
- ``explain_refine``: the same, answered by an explanation then the correct code;
- ``generate``: problem → a correct initial sample.
Only the final assistant turn is learned: prompt tokens get label -100.
"""

from __future__ import annotations

import hashlib
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from selfdebug.train.config import KINDS

IGNORE = -100


def unit_hash(*parts: Any) -> float:
    """A stable uniform number in [0, 1) for ``parts`` (seeded choices without RNG state)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _read_dir(uri: str) -> list[dict]:
    """Rows of every ``*.parquet`` under ``uri`` (a local dir or s3:// / gs:// URI), sorted by file."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    if "://" in uri:
        fs, root = pafs.FileSystem.from_uri(uri)
    else:
        fs, root = pafs.LocalFileSystem(), str(Path(uri).resolve())
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    files = sorted(i.path for i in infos if i.path.endswith(".parquet"))
    return [row for f in files for row in pq.read_table(f, filesystem=fs).to_pylist()]


def raw_examples(data_dir: str | Path) -> list[dict]:
    """One dict per candidate example: example_id, task_id, kind, messages (JSON), answer.

    From ``debug/`` (correct refinements) and ``samples/`` (passing samples) of a synthesis
    output, and ``examples/`` (rows already in this form, e.g. the demo's).
    """
    from selfdebug.llm import prompts

    data = str(data_dir).rstrip("/")
    out = []
    for r in _read_dir(f"{data}/debug"):
        if not r.get("correct"):
            continue
        if r["mode"] == "explain_refine":
            kind = "explain_refine"
            messages = prompts.explain_refine_messages(r["prompt"], r["wrong_code"], r["feedback"])
            answer = prompts.assistant_answer(r["refined_code"], r.get("explanation") or "")
        else:
            kind = "refine"
            messages = prompts.refine_messages(r["prompt"], r["wrong_code"], r["feedback"])
            answer = prompts.assistant_answer(r["refined_code"])
        out.append({"example_id": f"{kind}:{r['record_id']}", "task_id": r["task_id"],
                    "kind": kind, "messages": json.dumps(messages), "answer": answer})
    for r in _read_dir(f"{data}/samples"):
        if r.get("status") != "passed":
            continue
        out.append({"example_id": f"generate:{r['task_id']}/{r['sample_index']}",
                    "task_id": r["task_id"], "kind": "generate",
                    "messages": json.dumps(prompts.generate_messages(r["prompt"])),
                    "answer": prompts.assistant_answer(r["code"])})
    # Ready-made examples (the demo's pretraining and in-memory round data): same columns
    for r in _read_dir(f"{data}/examples"):
        if r["kind"] not in KINDS:
            raise ValueError(f"{data}/examples: unknown example kind {r['kind']!r}; known: {KINDS}")
        out.append({k: r[k] for k in ("example_id", "task_id", "kind", "messages", "answer")})
    out.sort(key=lambda e: e["example_id"])  # independent of file and row order
    return out


def is_validation(task_id: str, val_fraction: float) -> bool:
    # Split by problem, not by example, so no problem is in both splits; not seeded, so
    # runs with different seeds are validated on the same problems.
    return unit_hash("val", task_id) < val_fraction


def mix(examples: list[dict], weights: dict[str, float], caps: dict[str, int],
        seed: int) -> list[dict]:
    """Cap each kind (a seeded subset), then repeat each example ``weight`` times on average."""
    unknown = (set(weights) | set(caps)) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown example kind(s) in mix: {sorted(unknown)}; known: {KINDS}")
    out = []
    for kind in KINDS:
        rows = sorted((e for e in examples if e["kind"] == kind),
                      key=lambda e: unit_hash(seed, "cap", e["example_id"]))
        cap = caps.get(kind, -1)
        if cap is not None and cap >= 0:
            rows = rows[:cap]
        w = float(weights.get(kind, 1.0))
        for e in rows:
            copies = math.floor(w) + (unit_hash(seed, "w", e["example_id"]) < w - math.floor(w))
            out += [dict(e, example_id=f"{e['example_id']}#{k}" if k else e["example_id"])
                    for k in range(copies)]
    out.sort(key=lambda e: e["example_id"])
    return out


def split_examples(examples: list[dict], cfg) -> tuple[list[dict], list[dict]]:
    """(train, validation): train is mixed per ``cfg``; validation is every held-out example once."""
    train = [e for e in examples if not is_validation(e["task_id"], cfg.val_fraction)]
    val = [e for e in examples if is_validation(e["task_id"], cfg.val_fraction)]
    return mix(train, cfg.mix_weights, cfg.mix_caps, cfg.seed), val


@lru_cache(maxsize=4)
def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def tokenize_example(tokenizer, messages: list[dict], answer: str,
                     eot: str | None = None) -> tuple[list[int], list[int]]:
    """(input_ids, labels): prompt and answer tokenized apart, so the mask is exact."""
    from selfdebug.llm.prompts import end_of_turn, render_prompt

    eot = end_of_turn(tokenizer) if eot is None else eot

    prompt = render_prompt(tokenizer, messages, add_generation_prompt=True)
    # One BOS: let the tokenizer add it unless the chat template already wrote it.
    bos = tokenizer.bos_token
    add_special = not (bos and prompt.startswith(bos))
    prompt_ids = tokenizer(prompt, add_special_tokens=add_special)["input_ids"]
    answer_ids = tokenizer(answer + eot, add_special_tokens=False)["input_ids"]
    return prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids


def tokenize_rows(rows: list[dict], tokenizer_path: str, max_seq_len: int) -> list[dict]:
    """Tokenized examples (input_ids, labels, example_id); longer than max_seq_len are dropped."""
    from selfdebug.llm.prompts import end_of_turn

    tok = load_tokenizer(tokenizer_path)
    eot = end_of_turn(tok)
    out = []
    for r in rows:
        ids, labels = tokenize_example(tok, json.loads(r["messages"]), r["answer"], eot)
        if len(ids) <= max_seq_len:
            out.append({"example_id": r["example_id"], "input_ids": ids, "labels": labels})
    return out
