"""Code and explanation out of a model's reply (DESIGN.md, "Prompts").

Only the reply's first assistant turn counts: a base model prompted with the plain template
may run past its answer and invent later turns (``<|end|>``, ``<|user|>`` ...), so the
reply is cut at the first turn marker. In that turn, code is the last fenced python block;
else the last fenced block of any language; a reply cut off inside a block (opening fence,
no closing one) gives the code after the fence; a reply with no fence at all is taken as
code as a whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from selfdebug.llm.prompts import TURN_MARKERS

# An opening fence (``` plus an optional info string), the body, then a closing fence or
# the end of the reply (truncated generations). The closing fence need not start a line:
# small models often write `return x```.
_BLOCK = re.compile(r"```[ \t]*([^\n`]*)(?:\n|\Z)(.*?)(```|\Z)", re.S)
_PYTHON_TAGS = {"python", "py", "python3", "py3", "python2", "ipython", "pycon", "sage"}


@dataclass(frozen=True)
class _Block:
    start: int  # offset of the opening fence
    lang: str
    code: str


def _blocks(reply: str) -> list[_Block]:
    out = []
    for m in _BLOCK.finditer(reply):
        info = m.group(1).strip().lower()
        lang = info.split()[0].lstrip("{.").rstrip("}") if info else ""
        out.append(_Block(m.start(), lang, _clean(m.group(2))))
    return out


def _clean(code: str) -> str:
    # Keep the first line's indentation; drop blank lines around the block.
    return code.strip("\n").rstrip()


def first_turn(reply: str) -> str:
    """``reply`` up to the first turn marker of the plain template (all of it if none)."""
    cut = min((i for i in (reply.find(m) for m in TURN_MARKERS) if i >= 0), default=-1)
    return reply if cut < 0 else reply[:cut]


def _pick(reply: str) -> _Block | None:
    blocks = _blocks(reply)
    python = [b for b in blocks if b.lang in _PYTHON_TAGS]
    if python:
        return python[-1]
    return blocks[-1] if blocks else None


def extract_code(reply: str) -> str:
    """The code in ``reply`` (see the module docstring for the rules)."""
    reply = first_turn(reply or "")
    block = _pick(reply)
    if block is None:
        return _clean(reply.strip())
    return block.code


def extract_explanation(reply: str) -> str:
    """The text before the chosen code block, stripped ("" when the reply has no fence)."""
    reply = first_turn(reply or "")
    block = _pick(reply)
    return reply[: block.start].strip() if block is not None else ""
