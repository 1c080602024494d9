"""A teacher model behind any OpenAI-compatible endpoint (explain + refine, DESIGN.md).

`Teacher.complete(messages)` sends one chat request (``n`` choices) with bounded
concurrency and retries with exponential backoff on 429 / 5xx / timeouts / refused
connections; token usage is summed in ``teacher.usage``. `TeacherStage` wraps it as a
Ray Data ``map_batches`` callable class with the row contract of the engine stages
(`EnginePool.ray_data_stage`): in ``messages``, out ``sample_index``, ``generated_text``,
``num_generated_tokens``, ``generation_error``; `teacher_stage` is the ``ds -> ds`` form.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from selfdebug.llm.prompts import FALLBACK_END, render_prompt


class TeacherError(RuntimeError):
    """A request that failed for good (after retries, or not retryable)."""


@dataclass
class TeacherConfig:
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"  # name of the env var holding the key
    max_concurrency: int = 8  # requests in flight per Teacher
    timeout_s: float = 120.0  # per attempt
    max_retries: int = 4  # retries after the first attempt
    backoff_s: float = 1.0  # first retry delay; doubles each retry (with jitter), ≤ 30 s
    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 1024
    n: int = 1
    seed: int | None = None
    # "chat": /chat/completions; "completions": /completions with the plain template;
    # "auto": chat, switching to completions if the server has no chat template.
    mode: str = "auto"
    extra_body: dict[str, Any] = field(default_factory=dict)  # server-specific params


@dataclass
class TeacherReply:
    text: str
    finish_reason: str | None = None
    model: str = ""


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0  # successful requests
    retries: int = 0
    failures: int = 0  # requests that failed for good

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _retryable(exc: BaseException) -> bool:
    import openai

    if isinstance(exc, openai.APIConnectionError | asyncio.TimeoutError):  # incl. timeouts
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


def _no_chat_template(exc: BaseException) -> bool:
    import openai

    return isinstance(exc, openai.BadRequestError) and "chat template" in str(exc).lower()


class Teacher:
    """Async client for one OpenAI-compatible endpoint. Safe to share across threads."""

    def __init__(self, config: TeacherConfig):
        if config.mode not in ("auto", "chat", "completions"):
            raise ValueError(f"TeacherConfig.mode must be auto|chat|completions, not {config.mode!r}")
        self.config = config
        self.usage = Usage()
        self._lock = threading.Lock()
        self._mode = config.mode
        # AsyncOpenAI (httpx) clients and semaphores belong to one event loop: one each
        # per loop, so complete_many (asyncio.run) and callers' own loops both work.
        self._per_loop: dict[int, tuple[Any, asyncio.Semaphore, Any]] = {}

    def _state(self):
        from openai import AsyncOpenAI

        loop = asyncio.get_running_loop()
        state = self._per_loop.get(id(loop))
        if state is None or state[2] is not loop:
            client = AsyncOpenAI(
                base_url=self.config.base_url,
                api_key=os.environ.get(self.config.api_key_env) or "EMPTY",
                timeout=self.config.timeout_s,
                max_retries=0,  # retries are ours: backoff + usage accounting
            )
            state = (client, asyncio.Semaphore(self.config.max_concurrency), loop)
            self._per_loop[id(loop)] = state
        return state

    def _add_usage(self, usage, *, ok: bool) -> None:
        with self._lock:
            if ok:
                self.usage.requests += 1
            else:
                self.usage.failures += 1
            if usage is not None:
                self.usage.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
                self.usage.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)

    def _sampling(self) -> dict[str, Any]:
        c = self.config
        kw: dict[str, Any] = dict(model=c.model, temperature=c.temperature, top_p=c.top_p,
                                  max_tokens=c.max_tokens, n=c.n)
        if c.seed is not None:
            kw["seed"] = c.seed
        if c.extra_body:
            kw["extra_body"] = dict(c.extra_body)
        return kw

    async def _request(self, client, messages: list[dict]) -> list[TeacherReply]:
        if self._mode == "completions":
            resp = await client.completions.create(
                prompt=render_prompt(None, messages), stop=[FALLBACK_END], **self._sampling()
            )
            self._add_usage(resp.usage, ok=True)
            return [TeacherReply(ch.text or "", ch.finish_reason, resp.model or "")
                    for ch in sorted(resp.choices, key=lambda ch: ch.index)]
        resp = await client.chat.completions.create(messages=messages, **self._sampling())
        self._add_usage(resp.usage, ok=True)
        return [TeacherReply(ch.message.content or "", ch.finish_reason, resp.model or "")
                for ch in sorted(resp.choices, key=lambda ch: ch.index)]

    async def complete(self, messages: list[dict]) -> list[TeacherReply]:
        """``n`` replies to one conversation; raises `TeacherError` once retries are spent."""
        client, semaphore, _ = self._state()
        c = self.config
        last: BaseException | None = None
        for attempt in range(c.max_retries + 1):
            if attempt:
                delay = min(30.0, c.backoff_s * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
                await asyncio.sleep(delay)
                with self._lock:
                    self.usage.retries += 1
            try:
                async with semaphore:
                    return await asyncio.wait_for(
                        self._request(client, messages), timeout=c.timeout_s + 5
                    )
            except Exception as exc:  # classified below
                last = exc
                if self._mode == "auto" and _no_chat_template(exc):
                    self._mode = "completions"  # the server's model has no chat template
                    continue
                if not _retryable(exc):
                    break
        self._add_usage(None, ok=False)
        raise TeacherError(
            f"teacher request to {c.base_url} (model {c.model!r}) failed after "
            f"{attempt + 1} attempt(s): {type(last).__name__}: {last}"
        ) from last

    async def complete_all(self, conversations: list[list[dict]], *,
                           return_exceptions: bool = False) -> list:
        return await asyncio.gather(*(self.complete(m) for m in conversations),
                                    return_exceptions=return_exceptions)

    def complete_many(self, conversations: list[list[dict]], *,
                      return_exceptions: bool = False) -> list:
        """Sync batch helper: replies per conversation, in order (concurrency bounded).

        With ``return_exceptions`` a failed conversation gives its `TeacherError` instead
        of raising.
        """
        async def run():
            try:
                return await self.complete_all(conversations, return_exceptions=return_exceptions)
            finally:
                await self._close_loop_client()

        return asyncio.run(run())

    async def _close_loop_client(self) -> None:
        state = self._per_loop.pop(id(asyncio.get_running_loop()), None)
        if state is not None:
            await state[0].close()


def _as_messages(value) -> list[dict]:
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, str):
        value = json.loads(value)
    return [dict(m) for m in value]


class TeacherStage:
    """Ray Data ``map_batches`` callable class: ``messages`` (a JSON string, or a list, of
    chat messages per row) → one row per (input row, choice): every input column,
    ``sample_index`` (0..n-1), ``generated_text``, ``num_generated_tokens`` (the request's
    completion tokens / n) and ``generation_error`` ("" unless the request failed).
    A batch in which every request fails raises: the endpoint is down or misconfigured.
    """

    def __init__(self, config: TeacherConfig):
        self.teacher = Teacher(config)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        if "sample_index" in batch:
            raise ValueError("input rows already have a 'sample_index' column (the generation "
                             "stage writes it): rename it before the stage")
        if "messages" not in batch:
            raise ValueError(f"a teacher needs a 'messages' column; columns: {sorted(batch)}")
        conversations = [_as_messages(v) for v in batch["messages"]]
        before = self.teacher.usage.completion_tokens
        results = self.teacher.complete_many(conversations, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if conversations and len(failed) == len(conversations):
            raise failed[0]
        n = self.teacher.config.n
        spent = self.teacher.usage.completion_tokens - before
        ok = len(conversations) - len(failed)
        per_reply = int(round(spent / max(1, ok * n)))
        index, samples, texts, errors = [], [], [], []
        for i, res in enumerate(results):
            replies = [] if isinstance(res, BaseException) else list(res)
            replies += [None] * (n - len(replies))  # a server that returned fewer choices
            for k, reply in enumerate(replies[:n]):
                index.append(i)
                samples.append(k)
                texts.append("" if reply is None else reply.text)
                errors.append(str(res) if isinstance(res, BaseException)
                              else ("" if reply is not None else "missing choice"))
        idx = np.asarray(index, dtype=np.int64)
        out = {k: np.asarray(v)[idx] for k, v in batch.items()}
        out["sample_index"] = np.asarray(samples, dtype=np.int64)
        out["generated_text"] = np.asarray(texts, dtype=object)
        out["num_generated_tokens"] = np.asarray(
            [0 if e else per_reply for e in errors], dtype=np.int64)
        out["generation_error"] = np.asarray(errors, dtype=object)
        return out


def teacher_stage(config: TeacherConfig, *, num_actors: int = 1, batch_size: int = 16,
                  num_cpus: float = 0.25) -> Callable:
    """A ``Dataset -> Dataset`` callable running `TeacherStage` on an actor pool, ``config.n``
    rows per input row. Actors take fractional CPUs: they only wait on the network."""
    import ray

    def run(ds):
        return ds.map_batches(
            TeacherStage,
            fn_constructor_args=(config,),
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=num_actors),
            num_cpus=num_cpus,
        )

    return run
