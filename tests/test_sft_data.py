"""SFT data: fixture layout, example kinds and label masking, mixing, packing without leaks."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest
import torch

from selfdebug.dataset import DEBUG_RECORD_COLUMNS
from selfdebug.train.config import SFTConfig
from selfdebug.train.data import epoch_order, micro_batches
from selfdebug.train.engine import warmup_cosine
from selfdebug.train.examples import (
    IGNORE,
    load_tokenizer,
    mix,
    raw_examples,
    split_examples,
    tokenize_example,
)
from selfdebug.train.fixture_data import build_fixture_dataset, mutate
from selfdebug.train.packing import collate, pack


@pytest.fixture(scope="module")
def fixture_dir(shared_data, tmp_path_factory):
    return build_fixture_dataset(tmp_path_factory.mktemp("sft-fixture"),
                                 shared_data / "mbpp.jsonl", problems=20)


@pytest.fixture(scope="module")
def examples(fixture_dir):
    return raw_examples(fixture_dir)


def test_fixture_layout(fixture_dir):
    debug = pq.read_table(fixture_dir / "debug")
    assert tuple(debug.column_names) == DEBUG_RECORD_COLUMNS
    samples = pq.read_table(fixture_dir / "samples")
    assert {"task_id", "source", "prompt", "sample_index", "code", "status", "passed", "total",
            "feedback"} <= set(samples.column_names)
    rows = debug.to_pylist()
    assert any(not r["correct"] for r in rows)  # failed refinements exist, to be skipped
    assert all(r["feedback"].startswith("[synthetic feedback") for r in rows)
    assert mutate("for i in range(n):\n    pass\n")[0] == "for i in range(n - 1):\n    pass\n"


def test_examples_use_only_correct_refinements(fixture_dir, examples):
    kinds = Counter(e["kind"] for e in examples)
    debug = pq.read_table(fixture_dir / "debug").to_pylist()
    # every correct record teaches the fix; those with an explanation also teach explaining
    assert kinds["refine"] == sum(bool(r["correct"]) for r in debug)
    assert kinds["explain_refine"] == sum(r["correct"] and r["mode"] == "explain_refine"
                                          for r in debug)
    assert all(e["task_id"].startswith("Mbpp/") for e in examples)  # the loaders' ids
    assert kinds["generate"] == 20  # every canonical solution "passed"
    expl = next(e for e in examples if e["kind"] == "explain_refine")
    assert expl["answer"].startswith("[synthetic explanation") and "```python" in expl["answer"]


@pytest.mark.parametrize("kind", ["refine", "explain_refine", "generate"])
def test_only_final_answer_is_labelled(examples, tiny_model_dir, kind):
    from selfdebug.llm.prompts import end_of_turn

    tok = load_tokenizer(str(tiny_model_dir))
    ex = next(e for e in examples if e["kind"] == kind)
    messages = json.loads(ex["messages"])
    ids, labels = tokenize_example(tok, messages, ex["answer"])
    assert len(ids) == len(labels)
    first = next(i for i, t in enumerate(labels) if t != IGNORE)
    assert all(t == IGNORE for t in labels[:first])  # the whole prompt is masked ...
    assert labels[first:] == ids[first:]  # ... and everything after it is learned
    learned = tok.decode(labels[first:], skip_special_tokens=False)
    assert learned == ex["answer"] + end_of_turn(tok)
    prompt = tok.decode(ids[:first], skip_special_tokens=False)
    assert prompt.endswith("<|assistant|>\n") and prompt.count(tok.bos_token) == 1
    if kind != "generate":  # the wrong code is in the history, never in the labels
        wrong = messages[1]["content"]
        assert wrong in prompt and wrong not in learned


def test_mix_caps_weights_and_split(examples):
    mixed = mix(examples, {"refine": 2.0, "explain_refine": 0.5, "generate": 1.0},
                {"generate": 5}, seed=0)
    n = Counter(e["kind"] for e in examples)
    m = Counter(e["kind"] for e in mixed)
    assert m["refine"] == 2 * n["refine"] and m["generate"] == 5
    assert 0 < m["explain_refine"] < n["explain_refine"]
    assert mixed == mix(examples, {"refine": 2.0, "explain_refine": 0.5, "generate": 1.0},
                        {"generate": 5}, seed=0)  # seeded, deterministic
    with pytest.raises(ValueError):
        mix(examples, {"bogus": 1.0}, {}, seed=0)
    train, val = split_examples(examples, SFTConfig(val_fraction=0.3))
    assert val and train
    assert not {e["task_id"] for e in train} & {e["task_id"] for e in val}


def _tokenized(examples, tok, n):
    out = []
    for e in examples[:n]:
        ids, labels = tokenize_example(tok, json.loads(e["messages"]), e["answer"])
        out.append({"example_id": e["example_id"], "input_ids": ids[:200], "labels": labels[:200]})
    return out


def test_packing_fits_every_example_once(examples, tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    tokenized = _tokenized(examples, tok, 12)
    rows = pack(tokenized, max_len=450)
    assert len(rows) < len(tokenized)
    assert all(len(r["input_ids"]) <= 450 for r in rows)
    assert sorted(i for r in rows for i in r["example_ids"]) == sorted(
        e["example_id"] for e in tokenized)
    for r in rows:  # positions restart at each example
        assert sum(p == 0 for p in r["position_ids"]) == len(r["example_ids"])


def test_packed_logits_match_unpacked(examples, tiny_model_dir):
    """No example attends to another: packed logits equal per-example logits."""
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    torch.manual_seed(0)
    with torch.no_grad():  # random weights are too uniform to show leaks: sharpen them
        for p in model.parameters():
            p.mul_(4.0)
    tokenized = [dict(e, input_ids=e["input_ids"][:n], labels=e["labels"][:n])
                 for e, n in zip(_tokenized(examples, tok, 3), (120, 90, 60))]
    (row,) = pack(tokenized, max_len=300)
    batch = collate([row], tok.pad_token_id)  # 270 tokens + 30 padding (its own segment)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                       use_cache=False).logits[0]
        leaky = model(input_ids=batch["input_ids"],  # plain causal: attends across examples
                      position_ids=torch.arange(batch["input_ids"].shape[1])[None],
                      use_cache=False).logits[0]
    by_id = {e["example_id"]: e for e in tokenized}
    start, leak_gap = 0, 0.0
    for eid in row["example_ids"]:
        ids = torch.tensor([by_id[eid]["input_ids"]])
        with torch.no_grad():
            alone = model(input_ids=ids, use_cache=False).logits[0]
        n = ids.shape[1]
        torch.testing.assert_close(packed[start:start + n], alone, atol=2e-4, rtol=1e-4)
        leak_gap = max(leak_gap, (leaky[start:start + n] - alone).abs().max().item())
        start += n
    assert leak_gap > 1e-2  # the comparison has teeth: without packing masks logits differ


def test_collate_pads_as_separate_segment():
    rows = [{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7], "position_ids": [0, 1, 2]},
            {"input_ids": [8], "labels": [8], "position_ids": [0]}]
    b = collate(rows, pad_id=2)
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 2, 2]]
    assert b["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]
    assert b["position_ids"].tolist() == [[0, 1, 2], [0, 0, 1]]


def test_epoch_order_and_resume_position():
    rows = [{"row_id": str(i)} for i in range(10)]
    order = epoch_order(10, seed=3, epoch=1, rank=0)
    assert list(order) == list(epoch_order(10, seed=3, epoch=1, rank=0))
    assert list(order) != list(epoch_order(10, seed=3, epoch=2, rank=0))
    full = list(micro_batches(rows, order, 2))
    assert len(full) == 5 and list(micro_batches(rows, order, 2, start=3)) == full[3:]


def test_warmup_cosine():
    f = warmup_cosine(warmup=4, total=10, min_ratio=0.1)
    assert f(0) == pytest.approx(0.25) and f(3) == pytest.approx(1.0)
    assert f(4) == pytest.approx(1.0) and f(10) == pytest.approx(0.1)
    assert all(f(i) >= f(i + 1) for i in range(4, 10))


@pytest.mark.ray
@pytest.mark.parametrize("packing", [True, False])
def test_worker_ingest_builds_the_rows_ray_data_streams(ray_cluster, fixture_dir, tiny_model_dir,
                                                        tmp_path, packing):
    """``ingest: worker`` (each worker tokenizes data_dirs itself) trains one worker on the
    rows Ray Data would stream it: same tokens, labels, positions and order."""
    from selfdebug.train.data import _as_row, build_examples, load_shards, ray_datasets

    cfg = SFTConfig(data_dirs=[str(fixture_dir)], val_fraction=0.25, max_seq_len=512,
                    packing=packing, ingest="worker")
    train, val = build_examples(cfg, tmp_path)
    streamed = ray_datasets(train, val, cfg, str(tiny_model_dir))
    built = load_shards(cfg, 0, 1, str(tiny_model_dir), tmp_path, from_ray_data=False)
    for name in ("train", "val"):
        want = sorted((_as_row(r) for r in streamed[name].take_all()),
                      key=lambda r: r["row_id"])
        got = built[name]
        assert want and [r["row_id"] for r in got] == [r["row_id"] for r in want]
        for a, b in zip(got, want, strict=True):
            assert a["example_ids"] == b["example_ids"]
            for k in ("input_ids", "labels", "position_ids"):
                assert a[k].tolist() == b[k].tolist(), (name, a["row_id"], k)


def test_unknown_ingest_is_refused():
    with pytest.raises(ValueError, match="ingest 'ray'.*ray_data"):
        SFTConfig(ingest="ray").validate()
