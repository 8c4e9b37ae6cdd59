"""The server's budgets and queue, and a generation cut short when its client is gone or its time is up."""

import asyncio
import time

import pytest

from alambic.config import LimitsSection
from alambic.serve.limits import Bucket, KeyBudgets, ModelQueue, OverLimit


def test_a_bucket_refills_over_the_minute() -> None:
    bucket = Bucket(60)
    bucket.charge(60)
    assert 0.9 < bucket.wait_for(1) <= 1.0  # one a second
    bucket.updated -= 0.5
    assert 0.4 < bucket.wait_for(1) <= 0.5
    bucket.charge(-100)
    assert bucket.wait_for(60) == 0 and bucket.level == 60  # never above the minute's budget


def test_requests_and_tokens_per_key() -> None:
    budgets = KeyBudgets(LimitsSection(requests_per_minute=2, tokens_per_minute=100))
    budgets.admit("a", {})
    budgets.admit("a", {})
    with pytest.raises(OverLimit) as refused:
        budgets.admit("a", {})
    assert refused.value.status == 429 and refused.value.retry_after == 30
    budgets.admit("b", {})  # another key has its own budget
    budgets.charge_tokens("b", 250)  # an answer may overspend; then the key waits until out of debt
    with pytest.raises(OverLimit, match="100 tokens per minute") as debt:
        budgets.admit("b", {})
    assert debt.value.retry_after == 91
    budgets.admit("c", {"requests_per_minute": 5})
    assert budgets._requests["c"].per_minute == 5


def test_a_full_queue_turns_requests_away() -> None:
    async def scenario() -> list[str]:
        queue, events = ModelQueue(size=2, typical_seconds=3.0), []

        async def answer(name: str) -> None:
            try:
                async with queue.turn():
                    events.append(f"{name} answered")
                    await asyncio.sleep(0.05)
            except OverLimit as exc:
                events.append(f"{name} {exc.status} retry {exc.retry_after}")

        await asyncio.gather(*(answer(name) for name in "abcd"))
        return events

    events = asyncio.run(scenario())
    assert events[0] == "a answered"
    assert "d 503 retry 3" in events and sum("answered" in e for e in events) == 3


def test_a_generation_stops_when_told() -> None:
    from alambic.models.embedded import embedded_gguf
    from alambic.models.llamacpp import LlamaCppChat

    model = LlamaCppChat(embedded_gguf(), n_ctx=512)
    request = {
        "messages": [{"role": "user", "content": "Count from one to one hundred."}],
        "max_tokens": 64,
        "temperature": 0.0,
    }
    whole = [c for c in model.openai_chat(request, lambda: False) if c["choices"][0]["delta"].get("content")]
    deadline = time.monotonic() + 3600
    told = iter([False] * 5 + [True] * 100)
    cut = [c for c in model.openai_chat(request, lambda: next(told) or time.monotonic() > deadline)]
    model.close()
    said = [c for c in cut if c["choices"][0]["delta"].get("content")]
    assert len(whole) > 10 and 3 <= len(said) <= 6
    assert cut[-1]["choices"][0]["finish_reason"] == "stop"
