"""ASGI middleware in front of every route: the optional API key (401) and the body size
limit (413), with OpenAI-style error bodies. No Ray or vLLM imports: cheap to test."""

from __future__ import annotations

import hmac
import json
import os
from pathlib import Path

OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # probes need no key


def error_body(message: str, status: int, param: str = "") -> dict:
    """OpenAI-style error object (what the `openai` client raises from)."""
    return {"error": {"message": message, "type": "invalid_request_error"
                      if status < 500 else "server_error", "param": param or None,
                      "code": status}}


def read_api_key(env_name: str, file_name: str) -> str:
    """The key from the env var, else the file ('' = no auth)."""
    key = os.environ.get(env_name, "").strip() if env_name else ""
    if not key and file_name:
        key = Path(file_name).expanduser().read_text().strip()
        if not key:
            raise ValueError(f"API key file {file_name} is empty")
    return key


class Guard:
    """ASGI middleware: API key (``Authorization: Bearer`` or ``X-API-Key``) → 401; a body
    over ``max_body_bytes`` → 413. The body is read here (bounded) and replayed to the app,
    so a large chunked upload is refused before any handler buffers it."""

    def __init__(self, app, *, api_key_env: str, api_key_file: str, max_body_bytes: int):
        self.app, self.max_body = app, max_body_bytes
        self.key = read_api_key(api_key_env, api_key_file)  # in the replica's environment

    async def _reply(self, send, status: int, message: str, param: str = "") -> None:
        body = json.dumps(error_body(message, status, param)).encode()
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _authorized(self, headers: dict) -> bool:
        auth = headers.get(b"authorization", b"").decode("latin-1")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else \
            headers.get(b"x-api-key", b"").decode("latin-1").strip()
        return bool(given) and hmac.compare_digest(given.encode(), self.key.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        path, root = scope["path"], scope.get("root_path", "")
        path = path[len(root):] if root and path.startswith(root) else path  # route_prefix
        if self.key and path not in OPEN_PATHS and not self._authorized(headers):
            missing = b"authorization" not in headers and b"x-api-key" not in headers
            return await self._reply(send, 401, "missing API key: send 'Authorization: Bearer "
                                     "<key>'" if missing else "wrong API key", "authorization")
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return await self._reply(send, 413, f"request body of {int(length)} bytes is over "
                                     f"the limit of {self.max_body} bytes", "body")
        chunks, size = [], 0
        while scope.get("method") in ("POST", "PUT", "PATCH"):
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                return await self._reply(send, 413, f"request body is over the limit of "
                                         f"{self.max_body} bytes", "body")
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # disconnect notices

        return await self.app(scope, replay, send)
