"""The guard in front of and behind every chat completion the server gives: an unsafe request or answer is
replaced by the business's refusal message, and each decision is counted in the ledger by category (the text
only if the business opted in with safety.log_requests)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from alambic.guard import Exchange, Guard, Verdict
from alambic.guard.remote import GuardError
from alambic.store import Item, Ledger

GUARDED_PATHS = ("/v1/chat/completions",)


def message_text(content: Any) -> str:
    """A message's text, whether a string or OpenAI's list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def last_user_text(body: dict[str, Any]) -> str | None:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return message_text(users[-1].get("content")) if users else None


def refusal_completion(body: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-guard-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or "student",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "content_filter"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def refusal_stream(body: dict[str, Any], text: str) -> StreamingResponse:
    completion = refusal_completion(body, text)

    def events() -> Any:
        chunk = {
            **{k: completion[k] for k in ("id", "created", "model")},
            "object": "chat.completion.chunk",
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": "content_filter"}
            ],
        }
        yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def streamed_text(raw: bytes) -> str:
    """The answer text of a buffered server-sent-event stream of chat completion chunks."""
    parts = []
    for line in raw.decode("utf-8", "replace").splitlines():
        if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
            try:
                chunk = json.loads(line[5:])
                parts.append(chunk["choices"][0]["delta"].get("content") or "")
            except (ValueError, KeyError, IndexError, TypeError):
                continue
    return "".join(parts)


class GuardedChat:
    """Starlette middleware logic: check the request, let the model answer, check the answer. Streams are
    buffered whole before they are checked, so a guarded stream arrives at once."""

    def __init__(self, guard: Guard, refusal: str, ledger: Ledger, check_answers: bool, log_text: bool) -> None:
        self.guard, self.refusal, self.ledger = guard, refusal, ledger
        self.check_answers, self.log_text = check_answers, log_text

    async def __call__(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.method != "POST" or request.url.path not in GUARDED_PATHS:
            return await call_next(request)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return await call_next(request)
        text = last_user_text(body) if isinstance(body, dict) else None
        if text is None:
            return await call_next(request)
        verdict = await self._check(Exchange(text), "request")
        if verdict.unsafe:
            return self._refuse(body)
        response = await call_next(request)
        if not self.check_answers or response.status_code != 200:
            return response
        raw = b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[attr-defined]
        streamed = bool(body.get("stream"))
        answer = streamed_text(raw) if streamed else _completion_text(raw)
        if (await self._check(Exchange(text, answer), "answer")).unsafe:
            return self._refuse(body)
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return Response(raw, response.status_code, headers, media_type=response.media_type)

    async def _check(self, exchange: Exchange, direction: str) -> Verdict:
        try:
            verdict = (await self.guard.check([exchange]))[0]
        except GuardError as exc:  # fail closed: without a verdict nothing is answered
            verdict = Verdict(True, 1.0, "guard-error")
            self._record(direction, verdict, exchange, str(exc))
            return verdict
        self._record(direction, verdict, exchange)
        return verdict

    def _refuse(self, body: dict[str, Any]) -> Response:
        if body.get("stream"):
            return refusal_stream(body, self.refusal)
        return JSONResponse(refusal_completion(body, self.refusal))

    def _record(self, direction: str, verdict: Verdict, exchange: Exchange, error: str | None = None) -> None:
        payload: dict[str, Any] = {
            "direction": direction,
            "unsafe": verdict.unsafe,
            "category": verdict.category if verdict.unsafe else None,
            "score": round(verdict.score, 4),
        }
        if error:
            payload["error"] = error
        if self.log_text:
            payload["request"] = exchange.request
            if exchange.answer is not None:
                payload["answer"] = exchange.answer
        key = f"guard-{uuid.uuid4().hex}"
        self.ledger.put_item(Item(key, "serve", "serve", "guard-decision", "ok", payload))


def _completion_text(raw: bytes) -> str:
    try:
        return message_text(json.loads(raw)["choices"][0]["message"].get("content"))
    except (ValueError, KeyError, IndexError, TypeError):
        return raw.decode("utf-8", "replace")
