"""The /v1/debug rounds: judge the code, ask the model for a fix with the feedback, judge the
fix, repeat on what still fails (LeDex's refine / explain+refine, DESIGN.md "Prompts").

The model and the sandbox come in as async callables, so this module knows nothing of Serve:
``generate(messages, max_tokens, temperature, seed) -> reply text`` and
``judge(problem, code) -> verdict dict`` (status, passed, total, outcomes, feedback, runtime).
State lives on the `DebugSession`, so a request cut off by its deadline still returns every
round that finished.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

from selfdebug.llm.extract import extract_code, extract_explanation
from selfdebug.llm.prompts import REFINE_MESSAGES
from selfdebug.schema import Problem
from selfdebug.serve.request import DebugRequest

Generate = Callable[[list, int, float, "int | None"], Awaitable[str]]
Judge = Callable[[Problem, str], Awaitable[dict]]

VERDICT_FIELDS = ("status", "passed", "total", "outcomes", "feedback", "runtime")


def _verdict(v: dict) -> dict:
    return {k: v.get(k) for k in VERDICT_FIELDS}


class DebugSession:
    """One request's rounds; `run` yields an event per step, `result` is the answer so far."""

    def __init__(self, req: DebugRequest, problem: Problem | None, generate: Generate,
                 judge: Judge, model_id: str = ""):
        self.req, self.problem, self.model_id = req, problem, model_id
        self._generate, self._judge = generate, judge
        self.started = time.monotonic()
        self.initial: dict | None = None
        self.rounds: list[dict] = []
        self.model_s = self.sandbox_s = 0.0
        self.stop_reason = "running"
        self.error = ""  # why the session stopped early (model/sandbox failure, deadline)

    async def _timed_judge(self, code: str) -> tuple[dict, float]:
        t0 = time.monotonic()
        verdict = await self._judge(self.problem, code)
        seconds = time.monotonic() - t0
        self.sandbox_s += seconds
        return _verdict(verdict), seconds

    async def run(self) -> AsyncIterator[dict]:
        req = self.req
        code, feedback = req.code, req.error.strip()
        if self.problem is not None:
            self.initial, seconds = await self._timed_judge(code)
            yield {"event": "initial", "verdict": self.initial, "sandbox_s": round(seconds, 4)}
            if self.initial["status"] == "passed" and not feedback:
                self.stop_reason = "already_passing"
                return
            if self.initial["status"] != "passed":
                # The error message the user saw first, then what the tests say.
                feedback = "\n\n".join(x for x in (feedback, self.initial["feedback"]) if x)
        build = REFINE_MESSAGES[req.mode]
        for index in range(1, req.max_rounds + 1):
            t0 = time.monotonic()
            reply = await self._generate(build(req.problem, code, feedback), req.max_tokens,
                                         req.temperature, req.seed)
            model_s = time.monotonic() - t0
            self.model_s += model_s
            fixed = extract_code(reply)
            entry = {"round": index, "explanation": extract_explanation(reply)
                     if req.mode == "explain_refine" else "", "code": fixed,
                     "verdict": None, "model_s": round(model_s, 4), "sandbox_s": 0.0}
            if self.problem is None:  # nothing to check the fix against: one round
                self.rounds.append(entry)
                self.stop_reason = "no_tests"
                yield {"event": "round", **entry}
                return
            entry["verdict"], seconds = await self._timed_judge(fixed)
            entry["sandbox_s"] = round(seconds, 4)
            self.rounds.append(entry)
            yield {"event": "round", **entry}
            if entry["verdict"]["status"] == "passed":
                self.stop_reason = "verified"
                return
            code, feedback = fixed, entry["verdict"]["feedback"]
        self.stop_reason = "max_rounds"

    def result(self) -> dict:
        """The answer: the verified fix, else the fix that passed most tests (latest on
        ties), else the model's last fix (unverified)."""
        verified = self.stop_reason == "verified" or (
            self.stop_reason == "already_passing")
        best = None
        if self.rounds:
            if self.problem is None:
                best = self.rounds[-1]
            else:
                best = max(reversed(self.rounds), key=lambda r: (
                    r["verdict"]["status"] == "passed", r["verdict"]["passed"]))
                if self.initial and self.initial["passed"] > best["verdict"]["passed"]:
                    best = None  # no fix beats the submitted code: say so, keep the code
        return {
            "object": "selfdebug.debug",
            "id": f"debug-{self.req.request_id}",
            "model": self.model_id,
            "mode": self.req.mode,
            "verified": verified,
            "code": best["code"] if best else self.req.code,
            "explanation": best["explanation"] if best else "",
            "rounds_used": len(self.rounds),
            "stop_reason": self.stop_reason,
            "initial": self.initial,
            "rounds": self.rounds,
            "error": self.error,
            "timings": {"total_s": round(time.monotonic() - self.started, 4),
                        "model_s": round(self.model_s, 4),
                        "sandbox_s": round(self.sandbox_s, 4)},
        }
