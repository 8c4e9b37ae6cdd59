"""Any OpenAI-compatible endpoint (vLLM, TGI, Ollama, llama.cpp's server, a hosted API), on one or many
replicas: least-outstanding-requests balancing, bounded concurrency, retries with backoff and jitter
that honour Retry-After, and a circuit breaker per replica."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx

from alambic.errors import AlambicError
from alambic.models.base import Completion, Message, PromptLogprobs, Sampling

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
# httpcore scans its whole pool on every request; several small pools keep that scan short at high concurrency.
CONNECTIONS_PER_POOL = 16


class TeacherError(Exception):
    """A request that failed for good (after retries, or with a non-retryable answer)."""


@dataclass
class CircuitBreaker:
    """Opens after `threshold` consecutive failures; after `cooldown_s` lets one probe through."""

    threshold: int = 5
    cooldown_s: float = 10.0
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False

    def available(self, now: float) -> bool:
        if self.opened_at is None:
            return True
        return not self.probing and now - self.opened_at >= self.cooldown_s

    def reopens_in(self, now: float) -> float:
        return 0.0 if self.opened_at is None else max(0.0, self.cooldown_s - (now - self.opened_at))

    def on_attempt(self) -> None:
        if self.opened_at is not None:
            self.probing = True

    def on_success(self) -> None:
        self.failures, self.opened_at, self.probing = 0, None, False

    def on_failure(self, now: float) -> None:
        self.failures += 1
        self.probing = False
        if self.failures >= self.threshold or self.opened_at is not None:
            self.opened_at = now


@dataclass
class Endpoint:
    url: str
    pools: list[httpx.AsyncClient]
    outstanding: int = 0
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    _turn: int = 0

    def client(self) -> httpx.AsyncClient:
        self._turn = (self._turn + 1) % len(self.pools)
        return self.pools[self._turn]


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def response_format(json_mode: str, schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAI, vLLM and SGLang take `json_schema`; llama-cpp-python's server takes a schema in `json_object`."""
    if json_mode == "json_object":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}


async def assemble_stream(lines: AsyncIterator[str]) -> dict[str, Any] | None:
    """A streamed chat completion (server-sent events) as the one JSON object a plain request returns;
    None if a chunk is malformed or the stream ends before `data: [DONE]`."""
    content: list[str] = []
    logprobs: list[dict[str, Any]] = []
    finish_reason, usage = None, None
    async for line in lines:
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            choice = {"message": {"content": "".join(content)}, "finish_reason": finish_reason}
            if logprobs:
                choice["logprobs"] = {"content": logprobs}
            return {"choices": [choice], "usage": usage or {}}
        try:
            chunk = json.loads(payload)
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or []:
                content.append((choice.get("delta") or {}).get("content") or "")
                logprobs += (choice.get("logprobs") or {}).get("content") or []
                finish_reason = choice.get("finish_reason") or finish_reason
        except (ValueError, AttributeError, TypeError):
            return None
    return None


T = TypeVar("T")
# Makes a result of a 2xx answer's JSON body (given the request body, the endpoint and the seconds taken);
# raises KeyError, ValueError and the like on a malformed one.
Reader = Callable[[dict[str, Any], dict[str, Any], str, float], T]


class OpenAIChat:
    def __init__(
        self,
        base_urls: list[str],
        model: str,
        api_key_env: str | None = None,
        timeout_s: float = 120.0,
        parallel: int = 16,
        extra_body: dict[str, Any] | None = None,
        max_retries: int = 6,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        json_mode: str = "json_schema",
        stream: bool = False,
        setting: str = "teacher",
    ) -> None:
        if not base_urls:
            raise AlambicError(f"{setting}.base_url: no endpoint given")
        self.setting = setting
        self.model = model
        self.name = model
        self.parallel = parallel
        self.extra_body = dict(extra_body or {})
        self.json_mode = json_mode
        self.stream = stream
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        headers = {}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise AlambicError(f"{setting}.api_key_env: environment variable {api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        self._timeout = httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))
        self._headers = headers
        self._urls = [url.rstrip("/") for url in base_urls]
        self._endpoints: list[Endpoint] = []
        self._semaphore: asyncio.Semaphore | None = None
        self._check_reachable()

    def _check_reachable(self) -> None:
        """Fail fast, with the URL in the message, if no replica answers at all."""
        errors = []
        for url in self._urls:
            try:
                response = httpx.get(f"{url}/models", headers=self._headers, timeout=self._timeout)
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)
                continue
            if response.status_code in (401, 403):
                raise AlambicError(f"{self.setting}.base_url {url} refused the API key (HTTP {response.status_code})")
            return
        raise AlambicError(
            f"{self.setting}.base_url {', '.join(self._urls)} does not answer ({', '.join(set(errors))})"
        )

    def _start(self) -> None:
        # Clients and the semaphore belong to the running event loop, so they are made on first use.
        size = min(self.parallel, CONNECTIONS_PER_POOL)
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        pools = -(-self.parallel // size)
        self._endpoints = [
            Endpoint(
                url,
                [
                    httpx.AsyncClient(base_url=url, headers=self._headers, timeout=self._timeout, limits=limits)
                    for _ in range(pools)
                ],
            )
            for url in self._urls
        ]
        self._semaphore = asyncio.Semaphore(self.parallel)

    async def _pick(self) -> Endpoint:
        while True:
            now = time.monotonic()
            ready = [e for e in self._endpoints if e.breaker.available(now)]
            if ready:
                return min(ready, key=lambda e: e.outstanding)
            await asyncio.sleep(max(0.05, min(e.breaker.reopens_in(now) for e in self._endpoints)))

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_max_s, self.backoff_s * 2**attempt))

    def _body(self, messages: list[Message], sampling: Sampling) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.json_schema is not None:
            body["response_format"] = response_format(self.json_mode, sampling.json_schema)
        if sampling.top_logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = sampling.top_logprobs
        if self.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        body.update(self.extra_body)
        return body

    async def achat(self, messages: list[Message], sampling: Sampling) -> Completion:
        return await self._request("/chat/completions", self._body(messages, sampling), _read_chat)

    async def aprompt_logprobs(self, text: str, top_k: int) -> PromptLogprobs:
        """The teacher's log-prob of every token of `text`, with its `top_k` alternatives, from the completions
        endpoint with `echo` (vLLM, llama.cpp)."""
        body = {"model": self.model, "prompt": text, "max_tokens": 1, "temperature": 0.0, "echo": True}
        return await self._request("/completions", {**body, **self.extra_body, "logprobs": top_k}, _read_echo)

    async def _request(self, path: str, body: dict[str, Any], read: Reader[T]) -> T:
        if self._semaphore is None:
            self._start()
        assert self._semaphore is not None
        async with self._semaphore:
            last_error = "no attempt"
            for attempt in range(self.max_retries + 1):
                endpoint = await self._pick()
                endpoint.breaker.on_attempt()
                endpoint.outstanding += 1
                try:
                    result, wait, last_error = await self._attempt(endpoint, path, body, read)
                finally:
                    endpoint.outstanding -= 1
                if result is not None:
                    return result
                if attempt < self.max_retries:
                    await asyncio.sleep(max(wait or 0.0, self._backoff(attempt)))
            raise TeacherError(f"gave up after {self.max_retries + 1} attempts: {last_error}")

    async def _attempt(
        self, endpoint: Endpoint, path: str, body: dict[str, Any], read: Reader[T]
    ) -> tuple[T | None, float | None, str]:
        """One try: what `read` makes of the answer, or (None, seconds the server asked us to wait, why it failed)."""
        began = time.monotonic()
        try:
            response, data = await self._exchange(endpoint, path, body)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            endpoint.breaker.on_failure(time.monotonic())
            return None, None, f"{type(exc).__name__} from {endpoint.url}"
        if response.status_code in RETRYABLE_STATUS:
            if response.status_code != 429:  # a busy server is alive; a failing one trips the breaker
                endpoint.breaker.on_failure(time.monotonic())
            return None, retry_after_seconds(response), f"HTTP {response.status_code} from {endpoint.url}"
        if response.status_code >= 400:
            endpoint.breaker.on_success()
            raise TeacherError(f"HTTP {response.status_code} from {endpoint.url}: {response.text[:200]}")
        try:
            assert data is not None
            result = read(data, body, endpoint.url, time.monotonic() - began)
        except (AssertionError, KeyError, IndexError, TypeError, AttributeError, ValueError):
            endpoint.breaker.on_failure(time.monotonic())
            return None, None, f"malformed or cut-short response from {endpoint.url}"
        endpoint.breaker.on_success()
        return result, None, ""

    async def _exchange(
        self, endpoint: Endpoint, path: str, body: dict[str, Any]
    ) -> tuple[httpx.Response, dict | None]:
        """The response and its body as one JSON object (None if the body is malformed or was cut short)."""
        if not body.get("stream"):
            response = await endpoint.client().post(path, json=body)
            if response.status_code >= 400:
                return response, None
            try:
                return response, response.json()
            except ValueError:
                return response, None
        async with endpoint.client().stream("POST", path, json=body) as response:
            if response.status_code >= 400:
                await response.aread()
                return response, None
            return response, await assemble_stream(response.aiter_lines())

    async def aclose(self) -> None:
        for endpoint in self._endpoints:
            for pool in endpoint.pools:
                await pool.aclose()


def _read_chat(data: dict[str, Any], body: dict[str, Any], url: str, seconds: float) -> Completion:
    choice = data["choices"][0]
    usage = data.get("usage") or {}
    return Completion(
        text=choice["message"].get("content") or "",
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        completion_tokens=int(usage.get("completion_tokens", 0)),
        finish_reason=choice.get("finish_reason") or "stop",
        endpoint=url,
        seconds=seconds,
        logprobs=(choice.get("logprobs") or {}).get("content") if "logprobs" in body else None,
    )


def _read_echo(data: dict[str, Any], body: dict[str, Any], url: str, seconds: float) -> PromptLogprobs:
    logprobs = data["choices"][0]["logprobs"]
    if not isinstance(logprobs, dict) or not logprobs.get("tokens") or "text_offset" not in logprobs:
        raise ValueError("no echoed prompt log-probs")
    usage = data.get("usage") or {}
    return PromptLogprobs(logprobs, url, seconds, usage.get("prompt_tokens", 0))
