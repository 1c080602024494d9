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


def _refine_example(r: dict, uid: str) -> dict:
    from selfdebug.llm import prompts

    return {"example_id": f"refine:{uid}", "task_id": r["task_id"], "kind": "refine",
            "messages": json.dumps(prompts.refine_messages(r["prompt"], r["wrong_code"],
                                                           r["feedback"])),
            "answer": prompts.assistant_answer(r["refined_code"])}


def _explain_refine_example(r: dict, uid: str) -> dict:
    from selfdebug.llm import prompts

    return {"example_id": f"explain_refine:{uid}", "task_id": r["task_id"],
            "kind": "explain_refine",
            "messages": json.dumps(prompts.explain_refine_messages(r["prompt"], r["wrong_code"],
                                                                   r["feedback"])),
            "answer": prompts.assistant_answer(r["refined_code"], r["explanation"])}


def _has_explanation(r: dict) -> bool:
    return r["mode"] == "explain_refine" and bool((r.get("explanation") or "").strip())


def pick_refinements(records: list[dict], one_per_sample: bool) -> list[dict]:
    """The correct debug records that become examples. ``one_per_sample``: one per wrong
    sample (LeDex keeps one distinct correct refinement per wrong solution), preferring a
    record with an explanation (it yields both example kinds), then the lowest record id."""
    correct = [r for r in records if r.get("correct")]
    if not one_per_sample:
        return correct
    best: dict[tuple, dict] = {}
    for r in sorted(correct, key=lambda r: (not _has_explanation(r), r["record_id"])):
        best.setdefault((r.get("dataset", ""), r["task_id"], r["sample_index"]), r)
    return list(best.values())


def examples_from_records(debug: list[dict], samples: list[dict],
                          one_per_sample: bool = False) -> list[dict]:
    """Candidate examples (example_id, task_id, kind, messages JSON, answer), sorted by id.

    Every correct refinement yields a *refine* example (wrong code + feedback → the fix);
    one with a non-empty explanation also yields an *explain_refine* example (→ the
    explanation, then the fix). Every passing initial sample yields a *generate* example.
    Rows of several synthesis outputs are told apart by their ``dataset`` (ids repeat)."""
    from selfdebug.llm import prompts

    datasets = sorted({r.get("dataset", "") for r in debug + samples})
    tag = {d: (f"{i}:" if len(datasets) > 1 else "") for i, d in enumerate(datasets)}
    out = []
    for r in pick_refinements(debug, one_per_sample):
        uid = tag[r.get("dataset", "")] + r["record_id"]
        out.append(_refine_example(r, uid))
        if _has_explanation(r):
            out.append(_explain_refine_example(r, uid))
    for r in samples:
        if r.get("status") != "passed":
            continue
        uid = f"{tag[r.get('dataset', '')]}{r['task_id']}/{r['sample_index']}"
        out.append({"example_id": f"generate:{uid}", "task_id": r["task_id"], "kind": "generate",
                    "messages": json.dumps(prompts.generate_messages(r["prompt"])),
                    "answer": prompts.assistant_answer(r["code"])})
    out.sort(key=lambda e: e["example_id"])  # independent of file and row order
    return out


def raw_examples(data_dirs: str | Path | list, one_per_sample: bool = False) -> list[dict]:
    """`examples_from_records` over the committed rows of one or several synthesis outputs."""
    from selfdebug.dataset import read_debug_records, read_samples

    dirs = [str(data_dirs)] if isinstance(data_dirs, str | Path) else [str(d) for d in data_dirs]
    debug = read_debug_records(dirs, columns=[
        "record_id", "task_id", "prompt", "sample_index", "wrong_code", "feedback", "mode",
        "explanation", "refined_code", "correct"])
    samples = read_samples(dirs, columns=["task_id", "prompt", "sample_index", "code",
                                          "status"])
    out = examples_from_records(debug, samples, one_per_sample) + ready_examples(dirs)
    return sorted(out, key=lambda e: e["example_id"])


def ready_examples(dirs: list[str]) -> list[dict]:
    """Examples already in this form, in ``examples/*.parquet`` of the data dirs (the
    demo's pretraining data, which is no synthesis output: its targets are partly wrong on
    purpose)."""
    import pyarrow.parquet as pq

    from selfdebug.dataset import synthesis_files

    out = []
    for d in dirs:
        fs, files = synthesis_files(d, "examples")
        for f in files:
            for r in pq.read_table(f, filesystem=fs).to_pylist():
                if r["kind"] not in KINDS:
                    raise ValueError(f"{f}: unknown example kind {r['kind']!r}; known: {KINDS}")
                out.append({k: r[k] for k in ("example_id", "task_id", "kind", "messages",
                                              "answer")})
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
