"""Llama Guard's answers parsed, the teacher as a guard, and a guard endpoint that is missing or answers nonsense."""

import asyncio
import math

import pytest

from alambic.errors import AlambicError
from alambic.guard import Exchange
from alambic.guard.remote import (
    GuardError,
    LlamaGuard,
    ShieldGemma,
    parse_llama_guard,
    parse_shieldgemma,
    shieldgemma_prompt,
)
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


def test_shieldgemma_answers_are_read_as_the_probability_of_yes() -> None:
    assert parse_shieldgemma(completion("No. The question asks about coffee."), "g") == 0.0
    assert parse_shieldgemma(completion("Yes, it seeks"), "g") == 1.0
    top = [{"token": "Yes", "logprob": math.log(0.2)}, {"token": "No", "logprob": math.log(0.6)}]
    logprobs = [{"token": "No", "logprob": math.log(0.6), "top_logprobs": top}]
    assert parse_shieldgemma(completion("No", logprobs), "g") == pytest.approx(0.25)
    with pytest.raises(GuardError, match=r"g: answered 'Sure', not ShieldGemma's 'Yes' or 'No'"):
        parse_shieldgemma(completion("Sure"), "g")


def test_shieldgemma_prompts_follow_its_documented_format() -> None:
    request = shieldgemma_prompt(Exchange("How do I kill the squeak?"), '"No Harassment": The {subject} shall not')
    assert request.startswith("You are a policy expert trying to help determine whether a user prompt is")
    assert "<start_of_turn>\nHuman Question: How do I kill the squeak?\n<end_of_turn>" in request
    assert '* "No Harassment": The prompt shall not' in request
    assert "Does the human question violate the above principle? Your answer must start with 'Yes' or 'No'." in request
    answer = shieldgemma_prompt(Exchange("Hi", "Hello there"), '"No Harassment": The {subject} shall not')
    assert "whether an AI response to prompt is" in answer and "Chatbot Response: Hello there" in answer
    assert '* "No Harassment": The chatbot shall not' in answer


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


@pytest.mark.integration
def test_shieldgemma_backend_against_a_real_server(llama_server: str) -> None:
    """The same real server behind the ShieldGemma format: asked four policies, it answers prose, an error."""
    guard = ShieldGemma(OpenAIChat([llama_server], "SmolLM2-135M-Instruct", timeout_s=60, max_retries=0))

    async def ask() -> None:
        try:
            await guard.check([Exchange("مرحبا، متى تفتحون؟")])
        finally:
            await guard.aclose()

    with pytest.raises(GuardError, match="not ShieldGemma's 'Yes' or 'No'"):
        asyncio.run(ask())
