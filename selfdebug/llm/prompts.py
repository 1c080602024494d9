"""Chat messages for the three tasks (generate, refine, explain + refine) and their rendering.

Messages are lists of ``{"role", "content"}`` dicts. They are rendered with the model's own
chat template when it has one, else with a plain ``<|user|> … <|end|>`` template (the
tiny model's template uses the same markers). See DESIGN.md, "Prompts".
"""

from __future__ import annotations

FENCE = "```"

GENERATE_INSTRUCTION = (
    "Write a Python solution to the problem above. "
    "Return the complete code in a single ```python code block."
)
REFINE_INSTRUCTION = (
    "Fix the code. Return the complete fixed code in a single ```python code block."
)
EXPLAIN_REFINE_INSTRUCTION = (
    "First explain what is wrong with the code and why, in a short paragraph. "
    "Then give the complete fixed code in a single ```python code block."
)
FEEDBACK_HEADER = "The code above is wrong. Here is the execution feedback:"

# The plain template (models without a chat template, e.g. base models).
FALLBACK_END = "<|end|>"
# What starts or ends a turn in it: generation stops at the end marker, and code extraction
# ignores everything from the first marker on (a base model invents further turns).
TURN_MARKERS = (FALLBACK_END, "<|user|>", "<|assistant|>", "<|system|>")


def _fenced(code: str) -> str:
    # Strip surrounding blank lines only: leading indentation is part of the code.
    return f"{FENCE}python\n{code.strip(chr(10)).rstrip()}\n{FENCE}"


def _problem_turn(problem_prompt: str) -> str:
    return f"{problem_prompt.strip()}\n\n{GENERATE_INSTRUCTION}"


def assistant_answer(code: str, explanation: str = "") -> str:
    """The text of a final assistant turn: explanation paragraph (if any), then fenced code."""
    explanation = explanation.strip()
    return f"{explanation}\n\n{_fenced(code)}" if explanation else _fenced(code)


def generate_messages(
    problem_prompt: str, few_shot: list[tuple[str, str]] | None = None
) -> list[dict]:
    """Ask for a solution; ``few_shot`` (problem, solution code) pairs come first as turns.

    Few-shot turns matter for base models: they show the answer format (one fenced block).
    """
    messages: list[dict] = []
    for example_prompt, example_code in few_shot or ():
        messages.append({"role": "user", "content": _problem_turn(example_prompt)})
        messages.append({"role": "assistant", "content": assistant_answer(example_code)})
    messages.append({"role": "user", "content": _problem_turn(problem_prompt)})
    return messages


def _feedback_turn(feedback: str, instruction: str) -> str:
    feedback = feedback.strip() or "(no feedback)"
    return f"{FEEDBACK_HEADER}\n\n{feedback}\n\n{instruction}"


def refine_messages(problem_prompt: str, wrong_code: str, feedback: str) -> list[dict]:
    """Problem, the wrong code as the assistant's earlier answer, then feedback + "fix it"."""
    return [
        {"role": "user", "content": _problem_turn(problem_prompt)},
        {"role": "assistant", "content": assistant_answer(wrong_code)},
        {"role": "user", "content": _feedback_turn(feedback, REFINE_INSTRUCTION)},
    ]


def explain_refine_messages(problem_prompt: str, wrong_code: str, feedback: str) -> list[dict]:
    """As `refine_messages`, but ask for an explanation of the bug before the fixed code."""
    return [
        {"role": "user", "content": _problem_turn(problem_prompt)},
        {"role": "assistant", "content": assistant_answer(wrong_code)},
        {"role": "user", "content": _feedback_turn(feedback, EXPLAIN_REFINE_INSTRUCTION)},
    ]


# The debugging conversations by mode (synthesis, evaluation).
REFINE_MESSAGES = {"refine": refine_messages, "explain_refine": explain_refine_messages}


def _has_chat_template(tokenizer) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def _render_fallback(messages: list[dict], add_generation_prompt: bool) -> str:
    text = "".join(f"<|{m['role']}|>\n{m['content']}{FALLBACK_END}\n" for m in messages)
    return text + "<|assistant|>\n" if add_generation_prompt else text


def render_prompt(tokenizer, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """Messages → prompt text: the tokenizer's chat template if it has one, else the fallback.

    The text carries no BOS of its own unless the template adds one; tokenizers that add
    BOS on encoding (Llama-style) add it when the text is tokenized.
    """
    if not _has_chat_template(tokenizer):
        return _render_fallback(messages, add_generation_prompt)
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    if not isinstance(text, str):  # some versions return a list for batched input
        text = text[0]
    return text


def stop_strings(tokenizer) -> list[str]:
    """Stop strings a prompt rendered for ``tokenizer`` needs: the plain template's
    end-of-turn marker when the model has no chat template (a base model does not stop on
    its own); none otherwise (the template's end of turn is the model's EOS token)."""
    return [] if _has_chat_template(tokenizer) else [FALLBACK_END]


def with_turn_stop(params: dict, tokenizer) -> dict:
    """vLLM sampling kwargs plus the `stop_strings` of ``tokenizer``'s prompts (kept once)."""
    extra = [s for s in stop_strings(tokenizer) if s not in (params.get("stop") or [])]
    return {**params, "stop": list(params.get("stop") or []) + extra} if extra else params


def has_chat_template(tokenizer) -> bool:
    """Whether prompts are rendered with the model's own template (else: plain, few-shot)."""
    return _has_chat_template(tokenizer)


def model_has_chat_template(path: str) -> bool:
    """`has_chat_template` of the tokenizer saved at ``path`` (a local dir or hub name)."""
    from transformers import AutoTokenizer

    return _has_chat_template(AutoTokenizer.from_pretrained(path))


_SENTINEL = "\u2063SELFDEBUG_ANSWER\u2063"


def end_of_turn(tokenizer) -> str:
    """The text that closes an assistant turn (SFT appends it to the labelled answer).

    Found by rendering a tiny conversation and taking what follows the assistant's
    content, trailing whitespace removed (e.g. ``<|end|>``, ``<|im_end|>``, ``<|eot_id|>``):
    the model stops generating there, so the newline a template puts after it is never
    generated. Falls back to ``tokenizer.eos_token``.
    """
    if not _has_chat_template(tokenizer):
        return FALLBACK_END
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": _SENTINEL},
    ]
    try:
        text = render_prompt(tokenizer, messages, add_generation_prompt=False)
    except Exception:  # templates that reject this shape: use the eos token
        text = ""
    if _SENTINEL in text:
        tail = text.rsplit(_SENTINEL, 1)[1].rstrip()
        if tail:
            return tail
    return getattr(tokenizer, "eos_token", None) or ""
