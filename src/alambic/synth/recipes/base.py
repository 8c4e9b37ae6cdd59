"""A recipe turns inputs (chunks, seed tasks, earlier items, sample posts) into training conversations.

Work comes in numbered groups: group g of a recipe always asks the same requests, so a re-run after a
crash redoes nothing that was stored, and "the first N accepted items in group order" is the same set
however the groups were scheduled.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from alambic.agent.grounding import support
from alambic.guard.refusal import is_refusal
from alambic.hashing import stable_hash
from alambic.models import Message
from alambic.models.base import Completion, Sampling
from alambic.store import Item
from alambic.synth.curation import answer_problem, clean_item, parse_lines
from alambic.synth.engine import STAGE, Engine, KeyedChunk


class Recipe(ABC):
    name: ClassVar[str]
    kind: ClassVar[str]
    prompt_names: ClassVar[tuple[str, ...]]
    group_size: int = 1
    refusals_expected: ClassVar[bool] = False

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.version = engine.prompts.version(*self.prompt_names)
        self.fingerprint = stable_hash(self.name, self.version, engine.teacher.key, self.settings_key())[:16]

    def settings_key(self) -> Any:
        s = self.engine.settings
        return [
            s.temperature,
            s.max_answer_tokens,
            s.min_answer_words,
            s.seed,
            s.logprobs,
            self.engine.system_prompt,
        ]

    def key(self, *parts: Any) -> str:
        return stable_hash(self.kind, self.fingerprint, *parts)

    @abstractmethod
    def max_groups(self) -> int:
        """How many groups this recipe can make from its inputs (within synth.max_rounds)."""

    @abstractmethod
    async def run_group(self, index: int) -> int:
        """Make group `index`, storing each item; returns how many were accepted (stored now or before)."""

    def settled(self, key: str) -> Item | None:
        stored = self.engine.ledger.item(key)
        return stored if stored is not None and stored.status != "failed" else None

    async def answer(
        self,
        key: str,
        order: list[int],
        prompt: str,
        question: str,
        chunk: KeyedChunk | None,
        parents: list[str],
        extra: dict[str, Any] | None = None,
        values: dict[str, Any] | None = None,
        trained_as: tuple[str, str] | None = None,
    ) -> int:
        """Have the teacher answer `question` (with `chunk` as its reference, if any); store the training item.

        The student is trained on (system prompt, question) -> answer, or on `trained_as` = (system, user turn).
        """
        engine = self.engine
        samples = engine.settings.answer_samples if chunk is not None else 1
        # Best of several is an item of its own, whose first sample is the single answer's (paid for once).
        sampled_as, key = key, key if samples == 1 else stable_hash(key, "best-of", samples)
        if (stored := self.settled(key)) is not None:
            return int(stored.status == "ok")
        values = {"question": question, "chunk": chunk.chunk.text if chunk else "", **(values or {})}
        messages = engine.messages(prompt, **values)
        base: dict[str, Any] = {"recipe": self.name, "fingerprint": self.fingerprint, "order": order}
        base |= {"question": question, **({"samples": samples} if samples > 1 else {})}
        if chunk is not None:
            base.update(chunk=chunk.key, doc=chunk.chunk.doc, citation=chunk.citation)
        base.update(extra or {})
        try:
            sampling, completion, usage = await self._sampled_answer(sampled_as, question, messages, chunk, samples)
        except Exception as exc:
            await engine.fail(key, self.kind, exc, {**base, "usage": [0, 0]}, parents)
            return 0
        answer = completion.text.strip()
        reason = self._answer_problem(question, completion)
        if self.refusals_expected and (reason is not None or not is_refusal(answer)):
            # A teacher that will not refuse (a small or uncensored one) must not leave the student without
            # refusals: the business's own refusal message answers instead.
            answer, reason = engine.config.safety.resolved_refusal_message(engine.business), None
            base["refusal_from"] = "safety.refusal_message"
        system, user_turn = trained_as or (engine.system_prompt, question)
        payload = {
            **base,
            "answer": answer,
            "messages": conversation(system, [user_turn, answer]),
            "teacher": engine.teacher.key,
            "teacher_messages": messages,
            "response": engine.teacher.response_key(messages, sampling),
            "usage": usage,
        }
        status = "ok" if reason is None else "rejected"
        await engine.store(Item(key, engine.run_id, STAGE, self.kind, status, payload, reason), parents)
        return int(status == "ok")

    def _answer_problem(self, question: str, completion: Completion) -> str | None:
        answer = completion.text.strip()
        reason = answer_problem(question, answer, completion.finish_reason, self.engine.settings.min_answer_words)
        if reason is None and not self.refusals_expected and is_refusal(answer):
            return "refusal"
        return reason

    async def _sampled_answer(
        self, key: str, question: str, messages: list[Message], chunk: KeyedChunk | None, samples: int
    ) -> tuple[Sampling, Completion, list[int]]:
        """The teacher's answer, its sampling and the tokens paid. Of several samples, the fit one whose additions
        to the question the chunk says most (`support`, as the agent checks its own answers); the first if none is
        fit."""
        teacher, settings = self.engine.teacher, self.engine.settings
        samplings = [
            teacher.sampling(
                key if i == 0 else stable_hash(key, "sample", i),
                settings.max_answer_tokens,
                top_logprobs=settings.logprobs,
            )
            for i in range(samples)
        ]
        completions = await asyncio.gather(*(teacher.ask(self.name, messages, sampling) for sampling in samplings))
        usage = [sum(c.prompt_tokens for c in completions), sum(c.completion_tokens for c in completions)]
        fit = [i for i, completion in enumerate(completions) if self._answer_problem(question, completion) is None]
        if chunk is None or len(fit) < 2:
            chosen = fit[0] if fit else 0
        else:
            chunk_text, rarity = [chunk.chunk.text], self.engine.rarity
            chosen = max(fit, key=lambda i: support(completions[i].text.strip(), question, chunk_text, rarity))
        return samplings[chosen], completions[chosen], usage

    async def ask_lines(self, key: str, kind: str, prompt: str, parents: list[str], **values: Any) -> list[str]:
        """A list the teacher writes (questions, tasks), parsed into lines and stored as an item."""
        if (stored := self.settled(key)) is not None:
            return stored.payload["lines"]
        engine = self.engine
        count = values["count"]
        messages = engine.messages(prompt, **values)
        try:
            completion = await engine.teacher.ask(self.name, messages, engine.teacher.sampling(key, 48 * count))
        except Exception as exc:
            await engine.fail(key, kind, exc, {"lines": [], **values}, parents)
            return []
        lines = parse_lines(completion.text, count, questions_only=kind == "questions")
        payload = {
            "raw": completion.text,
            "lines": lines,
            "usage": [completion.prompt_tokens, completion.completion_tokens],
        }
        status, reason = ("ok", None) if lines else ("rejected", f"no_{kind}")
        await engine.store(Item(key, engine.run_id, STAGE, kind, status, payload, reason), parents)
        return lines

    async def ask_text(
        self, key: str, kind: str, prompt: str, parents: list[str], one_question: bool = False, **values: Any
    ) -> str | None:
        """One short text the teacher writes (a request, a comment), stored as an item; None if unusable. With
        ``one_question``, the text must hold exactly one question, which is what is kept."""
        if (stored := self.settled(key)) is not None:
            return stored.payload["text"] if stored.status == "ok" else None
        engine = self.engine
        messages = engine.messages(prompt, **values)
        try:
            sampling = engine.teacher.sampling(key, engine.settings.max_answer_tokens)
            completion = await engine.teacher.ask(self.name, messages, sampling)
        except Exception as exc:
            await engine.fail(key, kind, exc, {"text": ""}, parents)
            return None
        if one_question:
            questions = parse_lines(completion.text, 2, questions_only=True)
            text, reason = (questions[0], None) if len(questions) == 1 else ("", "not_one_question")
        else:
            text = clean_item(completion.text)
            reason = answer_problem("", text, completion.finish_reason, 3)
        payload = {
            "text": text,
            "raw": completion.text,
            "usage": [completion.prompt_tokens, completion.completion_tokens],
        }
        await engine.store(
            Item(key, engine.run_id, STAGE, kind, "ok" if reason is None else "rejected", payload, reason), parents
        )
        return text if reason is None else None


def conversation(system_prompt: str, turns: list[str]) -> list[Message]:
    """OpenAI chat messages: the system prompt, then user and assistant turns in alternation."""
    messages: list[Message] = [{"role": "system", "content": system_prompt}]
    for index, text in enumerate(turns):
        messages.append({"role": "user" if index % 2 == 0 else "assistant", "content": text})
    return messages
