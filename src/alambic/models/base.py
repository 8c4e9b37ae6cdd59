"""What every stage may ask of a model, whatever serves it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

from alambic.errors import AlambicError


class Message(TypedDict):
    role: str
    content: str


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int | None = None
    stop: tuple[str, ...] = ()
    json_schema: dict[str, Any] | None = None  # constrain the answer to JSON of this schema
    top_logprobs: int = 0  # also return the k most likely tokens at each position
    # Also return the answer's mean token log-prob (greedy decoding: each step's most likely token's log-prob).
    confidence: bool = False


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    endpoint: str = "local"
    seconds: float = 0.0  # time the model spent on this answer, not counting any queueing
    # Per generated token: {"token", "logprob", "bytes", "top_logprobs": [...]}, as OpenAI returns them.
    logprobs: list[dict[str, Any]] | None = None
    mean_logprob: float | None = None  # when Sampling.confidence asked for it


@dataclass
class PromptLogprobs:
    """A model's log-prob of every token of a text it was given, as an OpenAI completions `echo` returns them:
    rows {"tokens", "token_logprobs", "top_logprobs", "text_offset"}."""

    rows: dict[str, Any]
    endpoint: str
    seconds: float
    prompt_tokens: int


class ChatModel(Protocol):
    """A model that answers chat messages. `parallel` is how many calls it serves at once."""

    name: str
    parallel: int

    async def achat(self, messages: list[Message], sampling: Sampling) -> Completion: ...

    async def aprompt_logprobs(self, text: str, top_k: int) -> PromptLogprobs:
        """Scores `text` itself: each token's log-prob, with its `top_k` most likely alternatives."""
        ...

    async def aclose(self) -> None: ...


class LocalChat(ABC):
    """The async side of an in-process model, which serves one call at a time.

    Calls run on the event loop's own thread: llama.cpp generated about half as fast from a worker
    thread here (77 vs 35-48 tok/s), and a local model has nothing to overlap with anyway. A server's
    llama.cpp model runs them on one thread of its own instead (LlamaCppChat's `own_thread`).
    """

    parallel = 1

    @abstractmethod
    def chat(self, messages: list[Message], sampling: Sampling) -> Completion: ...

    async def achat(self, messages: list[Message], sampling: Sampling) -> Completion:
        return self.chat(messages, sampling)

    async def aprompt_logprobs(self, text: str, top_k: int) -> PromptLogprobs:
        raise AlambicError(f"{self.name}: this backend does not score prompts; serve the teacher over its API")

    async def aclose(self) -> None:
        """Free native resources where the backend holds any (llama.cpp does)."""
        release = getattr(self, "close", None)
        if release is not None:
            release()
