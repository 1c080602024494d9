"""A stand-in for the MODEL deployment only (a test double: vLLM on this 2-core box cannot be
made to write a correct fix on demand). It speaks the LLMServer protocol the ingress uses
(`completions` as a stream of one CompletionResponse, `check_health`) and answers with the
reply whose key phrase occurs in the prompt. Everything else in the app is real: HTTP,
the ingress, the Serve handles, the sandbox deployment and its fork servers."""

from __future__ import annotations

import asyncio


class StandInModel:
    def __init__(self, answers: dict[str, str], version: str = "v1", delay_s: float = 0.0):
        self.answers, self.version, self.delay_s = answers, version, delay_s
        self.prompts: list[str] = []
        # vLLM's protocol classes take seconds to import: not on the first request
        from ray.llm._internal.serve.core.configs.openai_api_models import CompletionResponse

        self.response_cls = CompletionResponse

    async def completions(self, body, raw_request_info=None):
        prompt = body.prompt if isinstance(body.prompt, str) else str(body.prompt)
        self.prompts.append(prompt)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        reply = next((r for k, r in self.answers.items() if k in prompt),
                     f"no idea ({self.version})")
        yield self.response_cls(model=body.model or "standin", choices=[
            {"index": 0, "text": reply.replace("{version}", self.version),
             "finish_reason": "stop"}],
            usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})

    async def check_health(self):
        return None

    async def seen_prompts(self) -> list[str]:
        return list(self.prompts)
