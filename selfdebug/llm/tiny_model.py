"""A tiny local Llama (≈0.8 M parameters) with its own BPE tokenizer and chat template.

There is no model hub on the CPU machines, so tests, examples and the CPU default
configuration build this model from local files in seconds: a byte-level BPE tokenizer
trained on Python stdlib source, a randomly initialised Llama, `save_pretrained` for both.
transformers, vLLM (CPU) and Ray all load it from disk.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

STAMP = "selfdebug_tiny.json"
STAMP_VERSION = 1  # bump when the build recipe changes so stale caches get rebuilt

BOS, EOS, PAD = "<s>", "<|end|>", "<pad>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
# "</s>" exists as a token but is not the eos: a turn ends with <|end|>, so vLLM and
# transformers stop generating at the end of the assistant's turn.
SPECIAL_TOKENS = [BOS, "</s>", PAD, EOS, *ROLE_TOKENS]

# Same format as the plain fallback in prompts.py: <|role|>\n content <|end|>\n.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

REQUIRED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", STAMP)


def _settings(vocab_size, hidden_size, layers, heads, intermediate_size, max_positions,
              corpus_chars, seed) -> dict:
    return {
        "version": STAMP_VERSION,
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "layers": layers,
        "heads": heads,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": max_positions,
        "corpus_chars": corpus_chars,
        "seed": seed,
    }


def _corpus(max_chars: int) -> Iterator[str]:
    """Stdlib Python files in sorted order (deterministic), capped at ``max_chars``."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    total = 0
    for path in sorted(stdlib.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        text = text[: max_chars - total]
        total += len(text)
        yield text
        if total >= max_chars:
            return


def _train_tokenizer(vocab_size: int, corpus_chars: int, max_length: int,
                     texts: Iterator[str] | None = None, split_digits: bool = False):
    """BPE on the stdlib corpus, or on ``texts``; ``split_digits``: one token per digit
    (numbers then tokenize the same wherever they appear: the demo's models copy them)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if split_digits:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True), tok.pre_tokenizer])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(corpus_chars) if texts is None else texts, trainer)
    # Encoding adds BOS (as Llama tokenizers do); the chat template does not, so a
    # rendered prompt tokenized by vLLM, Ray Data or SFT gets exactly one BOS.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, tok.token_to_id(BOS))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=ROLE_TOKENS,
        chat_template=CHAT_TEMPLATE,
        model_max_length=max_length,
        clean_up_tokenization_spaces=False,
    )


def _build_model(tokenizer, settings: dict):
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=settings["hidden_size"],
        intermediate_size=settings["intermediate_size"],
        num_hidden_layers=settings["layers"],
        num_attention_heads=settings["heads"],
        num_key_value_heads=settings["heads"],
        max_position_embeddings=settings["max_position_embeddings"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(settings["seed"])
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model


def _read_stamp(out: Path) -> dict | None:
    try:
        return json.loads((out / STAMP).read_text())
    except (OSError, ValueError):
        return None


def _is_built(out: Path, settings: dict) -> bool:
    return all((out / f).exists() for f in REQUIRED_FILES) and _read_stamp(out) == settings


@contextlib.contextmanager
def _lock(out: Path):
    # Several test sessions may build the same cached model at once: serialise them.
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_tiny_model(
    out_dir: str | os.PathLike,
    *,
    vocab_size: int = 4096,
    hidden_size: int = 64,
    layers: int = 4,
    heads: int = 2,
    intermediate_size: int = 256,
    max_position_embeddings: int = 4096,
    corpus_chars: int = 2_000_000,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Build (or reuse) the tiny model in ``out_dir`` and return its path.

    A no-op when ``selfdebug_tiny.json`` there matches the settings. ``heads`` must keep
    ``hidden_size / heads`` ≥ 32: vLLM's CPU attention supports no smaller head size.
    """
    out = Path(out_dir).resolve()
    settings = _settings(vocab_size, hidden_size, layers, heads, intermediate_size,
                         max_position_embeddings, corpus_chars, seed)
    if hidden_size % heads or hidden_size // heads < 32:
        raise ValueError(f"head size {hidden_size}/{heads} must be an integer ≥ 32 (vLLM CPU)")
    if not force and _is_built(out, settings):
        return out
    with _lock(out):
        if not force and _is_built(out, settings):  # built by someone else meanwhile
            return out
        # Build next to the target and swap it in, so readers never see half a model.
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
        try:
            tokenizer = _train_tokenizer(vocab_size, corpus_chars, max_position_embeddings)
            model = _build_model(tokenizer, settings)
            tokenizer.save_pretrained(tmp)
            model.save_pretrained(tmp)
            (tmp / STAMP).write_text(json.dumps(settings, indent=2) + "\n")
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """`selfdebug tiny-model OUT_DIR [--force]`."""
    parser = argparse.ArgumentParser(prog="selfdebug tiny-model", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", help="directory to write the model and tokenizer to")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = build_tiny_model(args.out_dir, vocab_size=args.vocab_size, hidden_size=args.hidden_size,
                           layers=args.layers, seed=args.seed, force=args.force)
    print(out)
    return 0
