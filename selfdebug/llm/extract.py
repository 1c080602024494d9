"""Code and explanation out of a model's reply (DESIGN.md, "Prompts").

Code is the last fenced python block; else the last fenced block of any language; a reply
cut off inside a block (opening fence, no closing one) gives the code after the fence;
a reply with no fence at all is taken as code as a whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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


def _pick(reply: str) -> _Block | None:
    blocks = _blocks(reply)
    python = [b for b in blocks if b.lang in _PYTHON_TAGS]
    if python:
        return python[-1]
    return blocks[-1] if blocks else None


def extract_code(reply: str) -> str:
    """The code in ``reply`` (see the module docstring for the rules)."""
    block = _pick(reply or "")
    if block is None:
        return _clean((reply or "").strip())
    return block.code


def extract_explanation(reply: str) -> str:
    """The text before the chosen code block, stripped ("" when the reply has no fence)."""
    block = _pick(reply or "")
    return reply[: block.start].strip() if block is not None else ""
