"""The agent as model `agent` of the OpenAI-compatible API, beside the bare student. A conversation is a session:
its id comes from the X-Session-Id header or the OpenAI `user` field (a new one is made and returned otherwise),
and only the customer's last message is read; the earlier turns come from the agent's own memory. The reply
carries what the agent did under `alambic` (passages, tool calls, hand-off), which the OpenAI SDK keeps as an
extra field."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from alambic.agent.loop import Agent, AgentReply
from alambic.errors import AlambicError
from alambic.serve.guarded import last_user_text

AGENT_MODEL = "agent"
STUDENT_MODEL = "student"
SESSION_HEADER = "x-session-id"
MAX_SESSION_CHARS = 128


def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}}, status)


def completion(reply: AgentReply) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-agent-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": AGENT_MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
        "alambic": reply.details(),
    }


def stream(reply: AgentReply) -> StreamingResponse:
    whole = completion(reply)
    base = {key: whole[key] for key in ("id", "created", "model")} | {"object": "chat.completion.chunk"}

    def events() -> Any:
        first = {"index": 0, "delta": {"role": "assistant", "content": reply.text}, "finish_reason": None}
        yield f"data: {json.dumps(base | {'choices': [first], 'alambic': whole['alambic']}, ensure_ascii=False)}\n\n"
        last = {"index": 0, "delta": {}, "finish_reason": "stop"}
        yield f"data: {json.dumps(base | {'choices': [last]})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


class AgentRoute:
    """Starlette middleware logic: chat completions for model `agent` go to the agent; everything else to the
    student's server. /v1/models lists both."""

    def __init__(self, agent: Agent, student_alias: str) -> None:
        self.agent, self.student_alias = agent, student_alias

    async def __call__(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.method == "GET" and request.url.path == "/v1/models":
            return self._models()
        if request.method != "POST" or request.url.path != "/v1/chat/completions":
            return await call_next(request)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return error(400, "the request body is not JSON")
        if not isinstance(body, dict) or body.get("model") != AGENT_MODEL:
            return await call_next(request)
        question = last_user_text(body)
        if not question or not question.strip():
            return error(400, "messages: the agent needs a user message with text")
        session = request.headers.get(SESSION_HEADER) or body.get("user") or None
        if session is not None and (not isinstance(session, str) or len(session) > MAX_SESSION_CHARS):
            return error(400, f"session id: a string of at most {MAX_SESSION_CHARS} characters")
        try:
            reply = await self.agent.answer(question, session)
        except AlambicError as exc:
            return error(500, str(exc), "server_error")
        return stream(reply) if body.get("stream") else JSONResponse(completion(reply))

    def _models(self) -> JSONResponse:
        names = [self.student_alias, STUDENT_MODEL, AGENT_MODEL]
        created = int(time.time())
        data = [{"id": name, "object": "model", "created": created, "owned_by": "alambic"} for name in names]
        return JSONResponse({"object": "list", "data": data})
