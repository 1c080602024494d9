"""The execution feedback a model reads (DESIGN.md, "Execution feedback")."""

from __future__ import annotations

import re


def clip(text: str, n: int) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 15] + " ...[truncated]"


def show(value, n: int = 200) -> str:
    try:
        text = repr(value)
    except Exception as e:  # noqa: BLE001  e.g. an int past Python's 4300-digit str limit
        bits = f" of {value.bit_length()} bits" if isinstance(value, int) else ""
        text = f"<{type(value).__name__}{bits}: {type(e).__name__}>"
    return clip(text, n)


def describe_exception(info: dict) -> str:
    head = f"{info.get('type', 'Error')}: {info.get('msg', '')}".rstrip(": ")
    if info.get("line"):
        head += f" at line {info['line']}"
    frames = info.get("frames") or []
    if frames:
        head += "\n" + "\n".join(f"  {f}" for f in frames[-3:])
    return head


SIGXCPU = 24


def death_outcome(info: dict) -> str:
    """The one mapping from how a sandboxed process ended to a test outcome: out of time
    (wall deadline or the CPU rlimit's SIGXCPU) is ``timeout``; any other death ``killed``."""
    if info.get("kind") == "timeout" or info.get("signal") == SIGXCPU:
        return "timeout"
    return "killed"


def describe_death(info: dict, timeout: float) -> str:
    kind = info.get("kind")
    if kind == "timeout":
        return f"Timed out after {timeout:g} s"
    if kind == "protocol":
        return "The program wrote to the sandbox's result channel"
    sig = info.get("signal")
    if sig == 25:
        return "Killed: output file size limit exceeded"
    if sig == 24:
        return "Timed out: CPU time limit exceeded"
    if sig is not None:
        return f"Killed by signal {sig}"
    if info.get("exit") is not None:
        return f"The program exited (exit code {info['exit']}) before the tests finished"
    return "The program died before the tests finished"


def statement_text(stmt: str, entry_point: str) -> str:
    """Test code as the model knows it: ``candidate`` is the function it wrote."""
    text = stmt.strip()
    if entry_point:
        text = re.sub(r"\bcandidate\b", entry_point, text)
    return clip(text, 300)


def io_failure(stdin: str, expected: str, actual: str, n: int = 300) -> str:
    return (f"Input:\n{clip(stdin, n)}\nExpected output:\n{clip(expected, n)}\n"
            f"Actual output:\n{clip(actual, n)}")


def summary_line(passed: int, total: int) -> str:
    return f"({passed} of {total} tests passed)"


# Verdicts of assert statements: one wording whichever process decided them (the checker,
# or the judge's bounded fast path, ``fastpath.py``). ``last``: (label, value) of the last
# call to the candidate, or None.
def call_raised(resps: list, stmt: str, entry_point: str) -> tuple[str, str] | None:
    """The verdict of a batched statement one of whose calls raised (its check never
    runs), or None when none raised."""
    exc = next((r["exc"] for r in resps if "exc" in r), None)
    if exc is None:
        return None
    exc = exc if isinstance(exc, dict) else {}
    return ("memory" if exc.get("type") == "MemoryError" else "error",
            f"`{statement_text(stmt, entry_point)}` raised {describe_exception(exc)}")


def check_failed(text: str, last) -> str:
    if last is None:
        return f"`{text}` failed"
    return f"`{text}` failed: {last[0]} returned {show(last[1])}"


def check_choked(text: str, e: BaseException, last) -> str:
    """The test code raised on what the candidate returned (``None - 1.0`` ...): a wrong
    value, not an exception in the candidate."""
    got = f" ({last[0]} returned {show(last[1])})" if last else ""
    return f"`{text}` failed with {type(e).__name__}: {clip(e, 200)}{got}"
