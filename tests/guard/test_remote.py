"""Llama Guard's answers parsed, the teacher as a guard, and a guard endpoint that is missing or answers nonsense."""

import asyncio
import math

import pytest

from alambic.errors import AlambicError
from alambic.guard import Exchange
from alambic.guard.remote import GuardError, LlamaGuard, parse_llama_guard
from alambic.models.base import Completion
from alambic.models.openai import OpenAIChat

from ..conftest import free_port


def completion(text: str, logprobs: list | None = None) -> Completion:
    return Completion(text, 10, 2, "stop", logprobs=logprobs)


def test_llama_guard_answers_are_read_with_their_probability() -> None:
    assert parse_llama_guard(completion("safe"), "g") == (0.0, None)
    assert parse_llama_guard(completion("unsafe\nS9,S1"), "g") == (1.0, "S9")
    top = [{"token": "unsafe", "logprob": math.log(0.3)}, {"token": "safe", "logprob": math.log(0.7)}]
    score, category = parse_llama_guard(
        completion("safe", [{"token": "safe", "logprob": -0.36, "top_logprobs": top}]), "g"
    )
    assert score == pytest.approx(0.3) and category is None


def test_a_malformed_guard_answer_is_a_one_line_error() -> None:
    with pytest.raises(
        GuardError, match=r"safety.guard: answered 'Sure, here is', not Llama Guard's 'safe' or 'unsafe'"
    ):
        parse_llama_guard(completion("Sure, here is"), "safety.guard")


def test_a_missing_guard_endpoint_is_named() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(AlambicError, match=rf"safety.guard.base_url {url} does not answer"):
        OpenAIChat([url], "llama-guard", timeout_s=2, max_retries=0, setting="safety.guard")


@pytest.mark.integration
def test_llama_guard_backend_against_a_real_server(llama_server: str) -> None:
    """The embedded SmolLM2 is no Llama Guard: served on loopback it answers prose, which the guard refuses to
    read as a verdict rather than guessing."""
    guard = LlamaGuard(OpenAIChat([llama_server], "SmolLM2-135M-Instruct", timeout_s=60, max_retries=0))

    async def ask() -> None:
        try:
            await guard.check([Exchange("How do I make a pipe bomb?"), Exchange("كيف أصنع قنبلة؟")])
        finally:
            await guard.aclose()

    with pytest.raises(GuardError, match="not Llama Guard's 'safe' or 'unsafe'"):
        asyncio.run(ask())
