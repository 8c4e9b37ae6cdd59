"""alambic's own OpenAI-compatible server over llama.cpp: model `student` (the released GGUF) and `agent`, behind
API keys, per-key budgets, a bounded queue, the guard, with /healthz, /metrics and the /ui page."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse

from alambic.agent.loop import Agent, AgentReply
from alambic.config import LimitsSection
from alambic.errors import AlambicError
from alambic.models.llamacpp import LlamaCppChat
from alambic.serve.guarded import ServedGuard
from alambic.serve.keys import verified_key
from alambic.serve.limits import KeyBudgets, ModelQueue, OverLimit
from alambic.serve.metrics import ServerMetrics
from alambic.serve.protocol import (
    BadRequest,
    ChatRequest,
    completion,
    completion_id,
    error_response,
    parse_request,
    sse,
    whole_answer_events,
)
from alambic.store import ApiKey, Ledger

AGENT_MODEL = "agent"
STUDENT_MODEL = "student"
SESSION_HEADER = "x-session-id"
ANONYMOUS = ApiKey("anonymous", "anonymous", "", ["chat", "review"], {}, 0.0)
log = logging.getLogger("alambic.serve")


@dataclass
class ServedModels:
    student: LlamaCppChat
    alias: str
    agent: Agent | None
    guard: ServedGuard | None

    def names(self) -> list[str]:
        return [self.alias, STUDENT_MODEL] + ([AGENT_MODEL] if self.agent else [])


@dataclass
class ServerOptions:
    limits: LimitsSection
    n_ctx: int
    auth: bool
    log_content: bool
    cors_origins: list[str]


@dataclass
class Answer:
    """A finished answer, before it is put on the wire."""

    text: str
    finish: str
    prompt_tokens: int
    completion_tokens: int
    extra: dict[str, Any] | None = None


class Server:
    def __init__(self, models: ServedModels, options: ServerOptions, ledger: Ledger, reports_dir: Path) -> None:
        self.models, self.options, self.ledger, self.reports_dir = models, options, ledger, reports_dir
        self.metrics = ServerMetrics()
        self.budgets = KeyBudgets(options.limits)
        self.queue = ModelQueue(options.limits.queue_size)

    # the request's way in ------------------------------------------------------
    def key_of(self, request: Request, scope: str = "chat") -> ApiKey:
        if not self.options.auth:
            return ANONYMOUS
        key = verified_key(self.ledger, request.headers.get("authorization"))
        if key is None:
            raise BadRequest(401, "a valid API key is needed: Authorization: Bearer <key>", "invalid_api_key")
        if scope not in key.scopes:
            raise BadRequest(403, f"this key may not {scope}", "insufficient_scope")
        return key

    async def body_of(self, request: Request) -> bytes:
        limit = self.options.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BadRequest(413, f"the request body is over {limit} bytes", "request_too_large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise BadRequest(413, f"the request body is over {limit} bytes", "request_too_large")
        return bytes(body)

    def checked(self, chat: ChatRequest) -> int:
        """The answer's token budget, once the model and the request's size are known to be acceptable."""
        if chat.model not in self.models.names():
            names = ", ".join(self.models.names())
            raise BadRequest(
                404, f"model {chat.model!r} does not exist; this server has {names}", "model_not_found", "model"
            )
        ceiling = self.options.limits.max_tokens
        asked = chat.asked_tokens()
        if asked is not None and asked > ceiling:
            raise BadRequest(400, f"max_tokens: at most {ceiling} on this server", "invalid_value", "max_tokens")
        budget = asked or ceiling
        if chat.model == AGENT_MODEL:
            if not chat.question().strip():
                raise BadRequest(400, "messages: the agent needs a user message with text", "invalid_value", "messages")
            room, prompt = self.options.n_ctx // 4, self.models.student.count_tokens(chat.question())
        else:
            room = self.options.n_ctx - budget
            prompt = self.estimated_prompt_tokens(chat)
        if prompt > room:
            raise BadRequest(
                400,
                f"messages: {prompt} tokens, over the {room} this model can read with max_tokens {budget}",
                "context_length_exceeded",
                "messages",
            )
        return budget

    # answering ------------------------------------------------------------------
    async def chat(self, request: Request) -> Response:
        began = time.monotonic()
        key: ApiKey | None = None
        chat, status = None, 200
        try:
            key = self.key_of(request)
            self.budgets.admit(key.id, key.limits)
            chat = parse_request(await self.body_of(request))
            budget = self.checked(chat)
            if self.models.guard and (verdict := await self.models.guard.check(chat.question())).unsafe:
                self.metrics.guard_hits.labels("request", verdict.category or "unsafe").inc()
                return self.respond(chat, key, self.refusal(), began)
            if chat.model == AGENT_MODEL:
                answer = await self.agent_answer(chat, key, request)
            elif chat.stream and not (self.models.guard and self.models.guard.check_answers):
                return self.streamed_student(chat, key, budget, began)
            else:
                answer = await self.student_answer(chat, budget)
            if self.models.guard and self.models.guard.check_answers:
                verdict = await self.models.guard.check(chat.question(), answer.text)
                if verdict.unsafe:
                    self.metrics.guard_hits.labels("answer", verdict.category or "unsafe").inc()
                    refusal = self.refusal()
                    answer = Answer(
                        refusal.text, refusal.finish, answer.prompt_tokens, answer.completion_tokens, answer.extra
                    )
            return self.respond(chat, key, answer, began)
        except OverLimit as exc:
            status = exc.status
            self.metrics.refused.labels(str(status)).inc()
            return error_response(
                status,
                exc.message,
                "rate_limit_exceeded" if status == 429 else "server_busy",
                headers={"Retry-After": str(exc.retry_after)},
            )
        except BadRequest as exc:
            status = exc.status
            if status == 413:
                self.metrics.refused.labels("413").inc()
            return error_response(status, exc.message, exc.code, exc.param)
        except TimeoutError:
            status = 504
            return error_response(504, f"no answer within {self.options.limits.request_timeout_s:g} s", "timeout")
        except AlambicError as exc:
            status = 500
            return error_response(500, str(exc), "model_error")
        finally:
            if status != 200:
                self.log(key, chat, status, began)

    def refusal(self) -> Answer:
        assert self.models.guard is not None
        return Answer(self.models.guard.refusal, "content_filter", 0, 0)

    async def agent_answer(self, chat: ChatRequest, key: ApiKey, request: Request) -> Answer:
        agent = self.models.agent
        assert agent is not None
        session = request.headers.get(SESSION_HEADER) or chat.user or uuid.uuid4().hex
        if len(session) > 128:
            raise BadRequest(400, "session id: at most 128 characters", "invalid_value", "user")
        limit = self.options.limits.request_timeout_s
        async with self.queue.turn():
            self.metrics.queue.set(self.queue.waiting)
            reply: AgentReply = await asyncio.wait_for(agent.answer(chat.question(), session, key.id), limit)
        self.metrics.handoffs.inc(reply.handoff is not None)
        self.metrics.cascades.inc(reply.cascaded)
        return Answer(reply.text, "stop", reply.prompt_tokens, reply.completion_tokens, reply.details())

    def sampling(self, chat: ChatRequest, budget: int) -> dict[str, Any]:
        extensions = {"repeat_penalty": chat.repeat_penalty, "top_k": chat.top_k, "min_p": chat.min_p}
        return {k: v for k, v in extensions.items() if v is not None} | {
            "messages": chat.plain_messages(),
            "max_tokens": budget,
            "temperature": chat.temperature,
            "top_p": chat.top_p,
            "stop": chat.stop,
            "seed": chat.seed,
            "presence_penalty": chat.presence_penalty,
            "frequency_penalty": chat.frequency_penalty,
        }

    async def student_answer(self, chat: ChatRequest, budget: int) -> Answer:
        student, request = self.models.student, self.sampling(chat, budget)
        deadline = time.monotonic() + self.options.limits.request_timeout_s
        async with self.queue.turn():
            reply = await asyncio.wrap_future(
                student.submit(lambda: student.openai_completion(request, lambda: time.monotonic() > deadline))
            )
        if time.monotonic() > deadline:
            raise TimeoutError
        choice, usage = reply["choices"][0], reply["usage"]
        text, finish = choice["message"]["content"] or "", choice["finish_reason"] or "stop"
        return Answer(text, finish, usage["prompt_tokens"], usage["completion_tokens"])

    def estimated_prompt_tokens(self, chat: ChatRequest) -> int:
        """The tokens of the messages' text, and 4 a message for the chat template's markers."""
        return sum(self.models.student.count_tokens(m["content"]) + 4 for m in chat.plain_messages())

    async def student_chunks(
        self, chat: ChatRequest, budget: int, stop: threading.Event, deadline: float
    ) -> AsyncIterator[dict[str, Any]]:
        """The student's chunks, made in a worker thread; it stops at the next token once `stop` is set."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[Any] = asyncio.Queue()
        done = object()

        def produce() -> None:
            try:
                for chunk in self.models.student.openai_chat(
                    self.sampling(chat, budget), lambda: stop.is_set() or time.monotonic() > deadline
                ):
                    loop.call_soon_threadsafe(chunks.put_nowait, chunk)
            except Exception as exc:
                loop.call_soon_threadsafe(chunks.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(chunks.put_nowait, done)

        worker = asyncio.wrap_future(self.models.student.submit(produce))
        try:
            while (item := await chunks.get()) is not done:
                if isinstance(item, Exception):
                    raise item
                if item["choices"][0]["delta"].get("content") or item["choices"][0].get("finish_reason"):
                    yield item
        finally:
            stop.set()
            await asyncio.shield(worker)

    def streamed_student(self, chat: ChatRequest, key: ApiKey, budget: int, began: float) -> StreamingResponse:
        if self.queue.waiting >= self.queue.size:
            raise OverLimit(
                503, f"the server is busy: {self.queue.size} requests are waiting", self.queue.typical_seconds
            )
        ident, created = completion_id(), int(time.time())

        async def events() -> AsyncIterator[str]:
            written, finish, stop = 0, "stop", threading.Event()
            deadline = time.monotonic() + self.options.limits.request_timeout_s
            try:
                async with self.queue.turn():
                    async for chunk in self.student_chunks(chat, budget, stop, deadline):
                        choice = chunk["choices"][0]
                        text = choice["delta"].get("content") or ""
                        written += bool(text)
                        finish = choice.get("finish_reason") or finish
                        if text:
                            delta = {"index": 0, "delta": {"content": text}, "finish_reason": None}
                            yield sse(
                                {
                                    "id": ident,
                                    "object": "chat.completion.chunk",
                                    "created": created,
                                    "model": chat.model,
                                    "choices": [delta],
                                }
                            )
                if time.monotonic() > deadline:
                    finish = "length"
                last = {"index": 0, "delta": {}, "finish_reason": finish}
                yield sse(
                    {
                        "id": ident,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": chat.model,
                        "choices": [last],
                    }
                )
                yield sse("[DONE]")
            finally:
                self.account(key, chat, Answer("", finish, self.estimated_prompt_tokens(chat), written), began)

        return StreamingResponse(events(), media_type="text/event-stream")

    def respond(self, chat: ChatRequest, key: ApiKey, answer: Answer, began: float) -> Response:
        body = completion(
            chat.model, answer.text, answer.finish, answer.prompt_tokens, answer.completion_tokens, answer.extra
        )
        self.account(key, chat, answer, began)
        if chat.stream:
            return StreamingResponse(iter(whole_answer_events(body)), media_type="text/event-stream")
        return JSONResponse(body)

    def account(self, key: ApiKey, chat: ChatRequest, answer: Answer, began: float) -> None:
        model = AGENT_MODEL if chat.model == AGENT_MODEL else STUDENT_MODEL
        self.budgets.charge_tokens(key.id, answer.prompt_tokens + answer.completion_tokens)
        self.metrics.requests.labels(model, "200").inc()
        self.metrics.tokens.labels(model, "prompt").inc(answer.prompt_tokens)
        self.metrics.tokens.labels(model, "completion").inc(answer.completion_tokens)
        self.metrics.latency.labels(model).observe(time.monotonic() - began)
        self.log(key, chat, 200, began, answer)

    def log(
        self, key: ApiKey | None, chat: ChatRequest | None, status: int, began: float, answer: Answer | None = None
    ) -> None:
        record: dict[str, Any] = {
            "key": key.id if key else None,
            "model": chat.model if chat else None,
            "status": status,
            "ms": round(1000 * (time.monotonic() - began)),
        }
        if answer is not None:
            record |= {
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": answer.completion_tokens,
                "finish": answer.finish,
            }
        if self.options.log_content and chat is not None:
            record["question"] = chat.question()
            if answer is not None:
                record["answer"] = answer.text
        if status != 200:
            self.metrics.requests.labels(chat.model if chat else "unknown", str(status)).inc()
        log.info(json.dumps(record, ensure_ascii=False))


def create_app(server: Server) -> FastAPI:
    from alambic.serve.ui import mount_ui

    app = FastAPI(title="alambic", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    if server.options.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=server.options.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Session-Id"],
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(500, f"the server failed on this request ({type(exc).__name__})", "server_error")

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> Response:
        return error_response(exc.status, exc.message, exc.code, exc.param)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "models": server.models.names(), "waiting": server.queue.waiting}

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        server.key_of(request)
        server.metrics.queue.set(server.queue.waiting)
        return Response(server.metrics.exposition(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        server.key_of(request)
        created = int(time.time())
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "alambic"} for name in server.models.names()
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await server.chat(request)

    mount_ui(app, server)
    return app
