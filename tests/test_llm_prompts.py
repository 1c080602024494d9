"""Prompts, rendering, end-of-turn, code/explanation extraction, and the tiny model."""

from __future__ import annotations

import json

import pytest

from selfdebug.llm.extract import extract_code, extract_explanation
from selfdebug.llm.prompts import (
    assistant_answer,
    end_of_turn,
    explain_refine_messages,
    generate_messages,
    refine_messages,
    render_prompt,
)

PROBLEM = 'def add(a, b):\n    """Return the sum of a and b."""\n'
WRONG = "def add(a, b):\n    return a - b"
FEEDBACK = "`assert add(1, 2) == 3` failed: got `-1`."


# ---------------------------------------------------------------- messages


def test_generate_messages_plain_and_few_shot():
    msgs = generate_messages(PROBLEM)
    assert [m["role"] for m in msgs] == ["user"]
    assert PROBLEM.strip() in msgs[0]["content"] and "```python" in msgs[0]["content"]

    shots = [("Return 1.", "def one():\n    return 1")]
    msgs = generate_messages(PROBLEM, few_shot=shots)
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[1]["content"] == "```python\ndef one():\n    return 1\n```"
    assert msgs[0]["content"].startswith("Return 1.")


def test_refine_messages_structure():
    for fn in (refine_messages, explain_refine_messages):
        msgs = fn(PROBLEM, WRONG, FEEDBACK)
        assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
        assert msgs[1]["content"] == f"```python\n{WRONG}\n```"
        assert FEEDBACK in msgs[2]["content"]
        assert "fix" in msgs[2]["content"].lower()
    assert "explain" not in refine_messages(PROBLEM, WRONG, FEEDBACK)[2]["content"].lower()
    assert "explain" in explain_refine_messages(PROBLEM, WRONG, FEEDBACK)[2]["content"].lower()


def test_assistant_answer_keeps_indentation():
    code = "\n\n    x = 1\n    return x\n\n"
    assert assistant_answer(code) == "```python\n    x = 1\n    return x\n```"
    ans = assistant_answer("return 1", "  The sign is wrong.  ")
    assert ans == "The sign is wrong.\n\n```python\nreturn 1\n```"
    assert extract_code(ans) == "return 1"
    assert extract_explanation(ans) == "The sign is wrong."


# ---------------------------------------------------------------- rendering


def test_render_fallback():
    msgs = refine_messages(PROBLEM, WRONG, FEEDBACK)
    text = render_prompt(None, msgs)
    assert text.startswith("<|user|>\n")
    assert text.endswith("<|end|>\n<|assistant|>\n")
    assert text.count("<|end|>\n") == 3
    full = render_prompt(None, msgs, add_generation_prompt=False)
    assert full + "<|assistant|>\n" == text
    assert end_of_turn(None) == "<|end|>"

    class NoTemplate:
        chat_template = None
        eos_token = "</s>"

    assert render_prompt(NoTemplate(), msgs) == text
    assert end_of_turn(NoTemplate()) == "<|end|>"


def test_render_with_tiny_model_template(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tok.chat_template
    msgs = explain_refine_messages(PROBLEM, WRONG, FEEDBACK)
    # The tiny model's template and the fallback are the same format.
    assert render_prompt(tok, msgs) == render_prompt(None, msgs)
    assert end_of_turn(tok) == "<|end|>" == tok.eos_token

    # prompt + answer + end_of_turn == the rendered conversation (what SFT relies on).
    answer = assistant_answer("def add(a, b):\n    return a + b", "It subtracts.")
    convo = msgs + [{"role": "assistant", "content": answer}]
    full = render_prompt(tok, convo, add_generation_prompt=False)
    assert full.rstrip("\n") == render_prompt(tok, msgs) + answer + end_of_turn(tok)

    # Markers are single special tokens; exactly one BOS is added on encoding.
    ids = tok(render_prompt(tok, msgs))["input_ids"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    for marker in ("<|user|>", "<|assistant|>", "<|end|>"):
        assert len(tok(marker, add_special_tokens=False)["input_ids"]) == 1


def test_end_of_turn_chatml_like_template():
    class ChatML:
        eos_token = "<|im_end|>"
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
            text = "".join(
                f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages
            )
            return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")

    tok = ChatML()
    assert end_of_turn(tok) == "<|im_end|>"
    assert render_prompt(tok, generate_messages("p")).endswith("<|im_start|>assistant\n")

    class Broken(ChatML):
        def apply_chat_template(self, *a, **k):
            raise ValueError("no assistant role")

    assert end_of_turn(Broken()) == "<|im_end|>"  # eos fallback


# ---------------------------------------------------------------- extraction

EXPLAINED = """The function subtracts instead of adding, so `add(1, 2)` gives -1.

```python
def add(a, b):
    return a + b
```
"""


@pytest.mark.parametrize(
    ("reply", "code", "explanation"),
    [
        (EXPLAINED, "def add(a, b):\n    return a + b",
         "The function subtracts instead of adding, so `add(1, 2)` gives -1."),
        # no fence: the whole reply
        ("  def f():\n    return 1\n\n", "def f():\n    return 1", ""),
        # ```py and bare ``` fences
        ("Fix:\n```py\nx = 1\n```", "x = 1", "Fix:"),
        ("```\nx = 2\n```\n", "x = 2", ""),
        # several blocks: the last python one wins over a later shell block
        ("Old:\n```python\nx = 1\n```\nNew:\n```python\nx = 3\n```\nRun:\n```bash\npython a.py\n```",
         "x = 3", "Old:\n```python\nx = 1\n```\nNew:"),
        # several non-python blocks: the last block
        ("```text\nfoo\n```\nthen\n```\nbar = 1\n```", "bar = 1", "```text\nfoo\n```\nthen"),
        # truncated reply: opening fence, no closing fence
        ("Because of X.\n```python\ndef f(x):\n    return x +", "def f(x):\n    return x +",
         "Because of X."),
        # closing fence glued to the code, language in upper case, trailing text
        ("```Python\nprint(1)```\nDone.", "print(1)", ""),
        # indentation of the first line is kept
        ("```python\n    return 1\n```", "    return 1", ""),
        ("", "", ""),
    ],
)
def test_extract(reply, code, explanation):
    assert extract_code(reply) == code
    assert extract_explanation(reply) == explanation


# ---------------------------------------------------------------- tiny model


def test_tiny_model_stamp_reuse_and_rebuild(tmp_path):
    from selfdebug.llm.tiny_model import STAMP, build_tiny_model, main

    out = tmp_path / "m"
    kw = dict(vocab_size=600, corpus_chars=100_000)
    assert build_tiny_model(out, **kw) == out.resolve()
    stamp = json.loads((out / STAMP).read_text())
    assert stamp["vocab_size"] == 600 and stamp["seed"] == 0
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    build_tiny_model(out, **kw)  # same settings: no-op
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime
    build_tiny_model(out, seed=1, **kw)  # different settings: rebuilt
    assert json.loads((out / STAMP).read_text())["seed"] == 1
    with pytest.raises(ValueError, match="head size"):
        build_tiny_model(out, hidden_size=48, **kw)
    # The CLI entry point (`selfdebug tiny-model OUT_DIR`).
    assert main([str(tmp_path / "cli"), "--vocab-size", "600", "--layers", "1"]) == 0
    assert (tmp_path / "cli" / "config.json").exists()


def test_tiny_model_loads_in_transformers_and_generates(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    n_params = sum(p.numel() for p in model.parameters())
    assert 300_000 < n_params < 2_000_000
    assert model.config.max_position_embeddings >= 2048
    assert model.config.eos_token_id == tok.eos_token_id
    prompt = render_prompt(tok, generate_messages(PROBLEM))
    ids = tok(prompt, return_tensors="pt")
    torch.manual_seed(0)
    out = model.generate(**ids, max_new_tokens=12, do_sample=True, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert isinstance(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True), str)
