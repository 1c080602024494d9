"""The HTTP ingress: Ray Serve LLM's OpenAI routes (`/v1/chat/completions`,
`/v1/completions`, `/v1/models`) plus `POST /v1/debug`, `/healthz` and `/readyz`.

/v1/debug calls the same model deployment through its Serve handle (one engine for both
endpoints) with prompts rendered by `llm.prompts.render_prompt` (the text SFT trained on),
and sends every test run to the sandbox deployment. `guard.Guard` (ASGI) checks the optional
API key and caps body sizes before any route runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from fastapi import Request
from ray.llm._internal.serve.core.configs.openai_api_models import (
    CompletionRequest,
    ErrorResponse,
)
from ray.llm._internal.serve.core.ingress.ingress import OpenAiIngress
from starlette.responses import JSONResponse, Response, StreamingResponse

from selfdebug.serve.config import ServeConfig
from selfdebug.serve.debugloop import DebugSession
from selfdebug.serve.guard import Guard, error_body, read_api_key
from selfdebug.serve.request import BadRequest, decode_body, parse_request

log = logging.getLogger("ray.serve")

class StepFailed(RuntimeError):
    """The model or the sandbox could not answer a step (``stop_reason`` says which)."""

    def __init__(self, stop_reason: str, message: str):
        super().__init__(message)
        self.stop_reason = stop_reason


def make_fastapi_app(cfg: ServeConfig):
    """Ray Serve LLM's FastAPI app (error format, CORS, HTTP metrics, request ids) with
    `Guard` outermost (middleware added last runs first)."""
    from ray.llm._internal.serve.core.ingress.ingress import init

    app = init()
    app.add_middleware(Guard, api_key_env=cfg.api_key_env, api_key_file=cfg.api_key_file,
                       max_body_bytes=cfg.debug.max_body_bytes)
    return app


class DebugIngress(OpenAiIngress):
    """OpenAiIngress + /v1/debug + probes. Bound with the model and sandbox handles."""

    def __init__(self, llm_deployments, model_cards, *, sandbox, config: ServeConfig,
                 tokenizer_path: str = "", lora_paths=None):
        super().__init__(llm_deployments, model_cards, lora_paths=lora_paths)
        self.cfg, self.sandbox = config, sandbox
        self.model_id = config.model.model_id
        # Fail the replica at start (not every request) when the key file is unreadable.
        read_api_key(config.api_key_env, config.api_key_file)
        self._tokenizer_path, self._tokenizer = tokenizer_path, None
        self._render([{"role": "user", "content": "warm-up"}])  # load the tokenizer now
        from ray.serve.metrics import Counter, Histogram

        self.m_requests = Counter("selfdebug_debug_requests",
                                  description="/v1/debug requests by how they ended",
                                  tag_keys=("stop_reason",))
        self.m_rounds = Counter("selfdebug_debug_rounds", description="model+sandbox rounds")
        bounds = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300]
        self.m_seconds = Histogram("selfdebug_debug_seconds", boundaries=bounds,
                                   description="/v1/debug time by part",
                                   tag_keys=("part",))

    # ------------------------------------------------------------------ model and sandbox
    def _render(self, messages: list) -> str:
        from selfdebug.llm.prompts import render_prompt

        if self._tokenizer is None and self._tokenizer_path:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self._tokenizer_path)
        return render_prompt(self._tokenizer, messages)

    async def _generate(self, messages: list, max_tokens: int, temperature: float,
                        seed: int | None) -> str:
        body = CompletionRequest(model=self.model_id, prompt=self._render(messages),
                                 max_tokens=max_tokens, temperature=temperature, seed=seed,
                                 stream=False)
        stream = self._get_response(body=body, call_method="completions")
        try:
            async with asyncio.timeout(self.cfg.debug.model_timeout_s):
                first = await anext(stream)
        except TimeoutError:
            raise StepFailed("model_timeout", f"the model did not answer within "
                             f"{self.cfg.debug.model_timeout_s} s") from None
        finally:
            await stream.aclose()
        first = first[0] if isinstance(first, list) else first
        if isinstance(first, ErrorResponse):
            raise StepFailed("model_error", f"model error: {first.error.message}")
        return first.choices[0].text

    async def _judge(self, problem, code: str) -> dict:
        try:
            async with asyncio.timeout(self.cfg.debug.sandbox_timeout_s):
                return await self.sandbox.judge.remote(problem, code)
        except TimeoutError:
            raise StepFailed("sandbox_timeout", f"the sandbox did not answer within "
                             f"{self.cfg.debug.sandbox_timeout_s} s") from None

    # ------------------------------------------------------------------ /v1/debug
    async def debug(self, request: Request) -> Response:
        try:
            req = parse_request(decode_body(await request.body()), self.cfg.debug)
        except BadRequest as e:
            return JSONResponse(error_body(str(e), e.status, e.field), status_code=e.status)
        session = DebugSession(req, req.to_problem(self.cfg.sandbox.timeout_floor),
                               self._generate, self._judge, self.model_id)
        if req.stream:
            return StreamingResponse(self._sse(session), media_type="text/event-stream")
        async for _ in self._drive(session):
            pass
        return JSONResponse(self._finish(session))

    async def _drive(self, session: DebugSession):
        """Session events under the request deadline; a failed or late step ends the
        session with what it has (``stop_reason`` says why), never an HTTP 5xx."""
        deadline = time.monotonic() + self.cfg.debug.request_timeout_s
        events = session.run()
        try:
            while True:
                try:
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        event = await anext(events)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    session.stop_reason, session.error = "timeout", (
                        f"request deadline of {self.cfg.debug.request_timeout_s} s reached")
                    return
                except StepFailed as e:
                    session.stop_reason, session.error = e.stop_reason, str(e)
                    return
                except Exception as e:  # noqa: BLE001  a replica died mid-call, etc.
                    log.exception("debug request %s failed", session.req.request_id)
                    session.stop_reason = "internal_error"
                    session.error = f"{type(e).__name__}: {str(e)[:500]}"
                    return
                yield event
        finally:
            await events.aclose()

    async def _sse(self, session: DebugSession):
        async for event in self._drive(session):
            yield f"event: {event['event']}\ndata: {json.dumps(event)}\n\n"
        result = self._finish(session)
        yield f"event: result\ndata: {json.dumps({'event': 'result', **result})}\n\n"
        yield "data: [DONE]\n\n"

    def _finish(self, session: DebugSession) -> dict:
        result = session.result()
        t = result["timings"]
        self.m_requests.inc(tags={"stop_reason": result["stop_reason"]})
        if result["rounds_used"]:
            self.m_rounds.inc(result["rounds_used"])
        for part in ("total", "model", "sandbox"):
            self.m_seconds.observe(t[f"{part}_s"], tags={"part": part})
        log.info("debug %s: %s after %d round(s), verified=%s, %.2f s (model %.2f s, "
                 "sandbox %.2f s)", result["id"], result["stop_reason"], result["rounds_used"],
                 result["verified"], t["total_s"], t["model_s"], t["sandbox_s"])
        return result

    # ------------------------------------------------------------------ probes
    async def healthz(self) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self) -> Response:
        """Ready when the model replica answers its health check and a sandbox replica its
        ping (each within 5 s); else 503 naming what is not ready."""
        model = self._default_serve_handles[self.model_id]
        checks = {"model": model.check_health.remote(), "sandbox": self.sandbox.ping.remote()}
        problems = {}
        for name, call in checks.items():
            try:
                async with asyncio.timeout(5.0):
                    await call
            except Exception as e:  # noqa: BLE001  not ready, for whatever reason
                problems[name] = f"{type(e).__name__}: {str(e)[:200]}" or "not ready"
        if problems:
            return JSONResponse({"status": "not ready", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready", "model": self.model_id})
