"""Any OpenAI-compatible endpoint: vLLM, TGI, Ollama, llama.cpp's server or a hosted API."""

from __future__ import annotations

import os

import httpx

from alambic.errors import AlambicError
from alambic.models.base import Completion, Message, Sampling


class OpenAIChat:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        timeout_s: float = 120.0,
        parallel: int = 4,
        extra_body: dict[str, object] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = model
        self.parallel = parallel
        self.extra_body = dict(extra_body or {})
        headers = {}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise AlambicError(f"teacher.api_key_env: environment variable {api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=parallel),
        )
        self._check_reachable()

    def _check_reachable(self) -> None:
        try:
            response = self._client.get("/models")
        except httpx.HTTPError as exc:
            raise AlambicError(f"teacher.base_url {self.base_url} does not answer ({type(exc).__name__})") from exc
        if response.status_code in (401, 403):
            raise AlambicError(f"teacher.base_url {self.base_url} refused the API key (HTTP {response.status_code})")

    def chat(self, messages: list[Message], sampling: Sampling) -> Completion:
        body: dict[str, object] = {
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
        body.update(self.extra_body)
        response = self._client.post("/chat/completions", json=body)
        response.raise_for_status()
        data = response.json()
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason=choice.get("finish_reason") or "stop",
        )

    def close(self) -> None:
        self._client.close()
