"""What every stage may ask of a model, whatever serves it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypedDict


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


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class ChatModel(Protocol):
    """A model that answers chat messages. `parallel` is how many calls it serves at once."""

    name: str
    parallel: int

    def chat(self, messages: list[Message], sampling: Sampling) -> Completion: ...

    def close(self) -> None: ...
