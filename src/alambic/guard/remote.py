"""Guards that another model runs: Llama Guard 3 behind any OpenAI-compatible endpoint, or the teacher as a judge
with a rubric. Both are calibrated like the embedded guard, by the safety stage, on benign questions."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from alambic.errors import AlambicError
from alambic.guard import HAZARDS, Exchange, Verdict
from alambic.hashing import stable_hash
from alambic.models.base import ChatModel, Completion, Message, Sampling
from alambic.models.teacher import Teacher
from alambic.prompts import Prompts


class GuardError(AlambicError):
    """The guard could not give a verdict: unreachable, or an answer that is not one."""


def llama_guard_messages(exchange: Exchange) -> list[Message]:
    """Llama Guard 3 takes the conversation itself; its chat template wraps it in the hazard policy."""
    messages: list[Message] = [{"role": "user", "content": exchange.request}]
    if exchange.answer is not None:
        messages.append({"role": "assistant", "content": exchange.answer})
    return messages


def parse_llama_guard(completion: Completion, source: str) -> tuple[float, str | None]:
    """(P("unsafe"), the first category named) from Llama Guard's "safe" or "unsafe\\nS1,S2" answer. The
    probability comes from the first token's log-probs where the server returns them, else it is 0 or 1."""
    lines = completion.text.strip().splitlines()
    verdict = lines[0].strip().lower() if lines else ""
    if verdict not in ("safe", "unsafe"):
        raise GuardError(f"{source}: answered {completion.text[:60]!r}, not Llama Guard's 'safe' or 'unsafe'")
    category = None
    if verdict == "unsafe" and len(lines) > 1:
        category = lines[1].split(",")[0].strip() or None
    probability = _unsafe_probability(completion.logprobs)
    if probability is None:
        probability = 1.0 if verdict == "unsafe" else 0.0
    return probability, category


def _unsafe_probability(logprobs: list[dict[str, Any]] | None) -> float | None:
    if not logprobs:
        return None
    first = logprobs[0]
    candidates = [first, *first.get("top_logprobs", [])]
    unsafe = [c["logprob"] for c in candidates if str(c.get("token", "")).strip().lower() == "unsafe"]
    return math.exp(max(unsafe)) if unsafe else 0.0


class LlamaGuard:
    """Llama Guard 3 (1B or 8B) served by vLLM, llama.cpp, TGI or Ollama; the score is P("unsafe")."""

    name = "openai"

    def __init__(self, model: ChatModel, threshold: float = 0.5) -> None:
        self.model, self.threshold = model, threshold

    async def check(self, exchanges: list[Exchange]) -> list[Verdict]:
        semaphore = asyncio.Semaphore(max(1, self.model.parallel))

        async def one(exchange: Exchange) -> Verdict:
            async with semaphore:
                completion = await self._ask(exchange)
            score, category = parse_llama_guard(completion, f"safety.guard ({self.model.name})")
            return Verdict(score > self.threshold, score, category if score > self.threshold else None)

        return list(await asyncio.gather(*(one(exchange) for exchange in exchanges)))

    async def _ask(self, exchange: Exchange) -> Completion:
        from alambic.models.openai import TeacherError

        try:
            return await self.model.achat(llama_guard_messages(exchange), Sampling(max_tokens=10, top_logprobs=5))
        except TeacherError as exc:
            raise GuardError(f"safety.guard: {exc}") from exc

    async def aclose(self) -> None:
        await self.model.aclose()


GUARD_JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"unsafe": {"type": "boolean"}, "category": {"type": "string"}},
    "required": ["unsafe", "category"],
}


class TeacherGuard:
    """The teacher as a judge: a rubric of the S1–S14 hazards and the business's own topics, answered in JSON.
    Its verdicts are kept in the ledger like every other teacher answer, so a re-run costs nothing."""

    name = "teacher"

    def __init__(self, teacher: Teacher, prompts: Prompts, business: str, topics: list[str]) -> None:
        self.teacher, self.prompts, self.business, self.topics = teacher, prompts, business, topics

    async def check(self, exchanges: list[Exchange]) -> list[Verdict]:
        semaphore = asyncio.Semaphore(max(1, self.teacher.parallel))

        async def one(exchange: Exchange) -> Verdict:
            async with semaphore:
                return await self._judge(exchange)

        return list(await asyncio.gather(*(one(exchange) for exchange in exchanges)))

    async def _judge(self, exchange: Exchange) -> Verdict:
        messages = self.prompts.messages(
            "guard-judge",
            business=self.business,
            hazards=HAZARDS,
            topics=self.topics,
            request=exchange.request,
            answer=exchange.answer,
        )
        sampling = self.teacher.sampling(stable_hash("guard", messages), 48, json_schema=GUARD_JUDGE_SCHEMA)
        completion = await self.teacher.ask("guard", messages, sampling)
        try:
            data = json.loads(completion.text)
            unsafe = data["unsafe"]
            if not isinstance(unsafe, bool):
                raise TypeError(unsafe)
        except (ValueError, KeyError, TypeError) as exc:
            raise GuardError(f"safety.guard (teacher): answered {completion.text[:60]!r}, not a verdict") from exc
        category = str(data.get("category") or "").strip() or None
        return Verdict(unsafe, 1.0 if unsafe else 0.0, category if unsafe else None)

    async def aclose(self) -> None:
        await self.teacher.aclose()
