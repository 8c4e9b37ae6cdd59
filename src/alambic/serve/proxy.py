"""`alambic proxy`: an OpenAI-compatible pass-through to the teacher that records every exchange in the ledger
(with the API key's id and the time), so a business that runs the teacher today distils tomorrow from its own
traffic (`synth.captured = true`). An exchange is stored before the client is told it is answered: the JSON
reply, or a stream's final `[DONE]`, leaves only after the ledger's commit."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI, Request
from starlette.background import BackgroundTask
from starlette.responses import JSONResponse, Response, StreamingResponse

from alambic.dataset import CAPTURE_KIND, CAPTURE_STAGE
from alambic.serve.keys import verified_key
from alambic.serve.protocol import error_response
from alambic.store import ApiKey, Item, Ledger

HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "content-encoding", "keep-alive"}
log = logging.getLogger("alambic.proxy")


def streamed_text(lines: list[str]) -> tuple[str, str | None]:
    """The answer and finish reason of a chat-completion stream's `data:` lines."""
    parts, finish = [], None
    for line in lines:
        try:
            choice = json.loads(line)["choices"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            continue
        parts.append((choice.get("delta") or {}).get("content") or "")
        finish = choice.get("finish_reason") or finish
    return "".join(parts), finish


class CaptureProxy:
    def __init__(self, teacher_url: str, ledger: Ledger, auth: bool, upstream_key: str | None, timeout_s: float):
        self.teacher_url, self.ledger, self.auth = teacher_url.rstrip("/"), ledger, auth
        headers = {"Authorization": f"Bearer {upstream_key}"} if upstream_key else {}
        self.client = httpx.AsyncClient(headers=headers, timeout=timeout_s)

    def key_of(self, request: Request) -> ApiKey | Response | None:
        if not self.auth:
            return None
        key = verified_key(self.ledger, request.headers.get("authorization"))
        if key is None:
            return error_response(401, "a valid API key is needed: Authorization: Bearer <key>", "invalid_api_key")
        return key

    async def record(
        self, key: ApiKey | None, request: dict[str, Any], answer: str, finish: str | None, usage: dict[str, Any] | None
    ) -> None:
        messages = [m for m in request.get("messages", []) if isinstance(m, dict)]
        payload = {
            "messages": [*messages, {"role": "assistant", "content": answer}],
            "model": request.get("model"),
            "key": key.id if key else None,
            "time": time.time(),
            "finish_reason": finish,
            "usage": usage,
            "stream": bool(request.get("stream")),
        }
        item = Item(f"capture-{uuid.uuid4().hex}", "proxy", CAPTURE_STAGE, CAPTURE_KIND, "ok", payload)
        await asyncio.to_thread(self.ledger.put_item, item)

    async def chat(self, request: Request) -> Response:
        key = self.key_of(request)
        if isinstance(key, Response):
            return key
        raw = await request.body()
        try:
            body = json.loads(raw)
            assert isinstance(body, dict)
        except (ValueError, AssertionError):
            return error_response(400, "the request body is not a JSON object")
        url = f"{self.teacher_url}/chat/completions"
        try:
            upstream = await self.client.send(
                self.client.build_request("POST", url, content=raw, headers={"Content-Type": "application/json"}),
                stream=True,
            )
        except httpx.HTTPError as exc:
            return error_response(502, f"the teacher at {self.teacher_url} did not answer ({type(exc).__name__})")
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
        if upstream.status_code != 200 or not upstream.headers.get("content-type", "").startswith("text/event-stream"):
            content = await upstream.aread()
            await upstream.aclose()
            if upstream.status_code == 200:
                try:
                    reply = json.loads(content)
                    choice = reply["choices"][0]
                    await self.record(
                        key,
                        body,
                        choice["message"].get("content") or "",
                        choice.get("finish_reason"),
                        reply.get("usage"),
                    )
                except (ValueError, KeyError, IndexError, TypeError):
                    log.warning("the teacher's answer is not a chat completion; not captured")
            return Response(content, upstream.status_code, headers)
        return StreamingResponse(
            self.relay(upstream, key, body), upstream.status_code, headers, background=BackgroundTask(upstream.aclose)
        )

    async def relay(self, upstream: httpx.Response, key: ApiKey | None, body: dict[str, Any]) -> AsyncIterator[bytes]:
        data: list[str] = []
        async for line in upstream.aiter_lines():
            if line.startswith("data:"):
                value = line[5:].strip()
                if value == "[DONE]":
                    answer, finish = streamed_text(data)
                    await self.record(key, body, answer, finish, None)
                else:
                    data.append(value)
            yield (line + "\n").encode("utf-8")

    async def models(self, request: Request) -> Response:
        key = self.key_of(request)
        if isinstance(key, Response):
            return key
        try:
            upstream = await self.client.get(f"{self.teacher_url}/models")
        except httpx.HTTPError as exc:
            return error_response(502, f"the teacher at {self.teacher_url} did not answer ({type(exc).__name__})")
        return Response(upstream.content, upstream.status_code, media_type="application/json")


def create_proxy_app(proxy: CaptureProxy) -> FastAPI:
    app = FastAPI(title="alambic proxy", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await proxy.chat(request)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        return await proxy.models(request)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok", "teacher": proxy.teacher_url})

    return app
