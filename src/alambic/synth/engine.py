"""What every recipe shares: the teacher behind a response cache, seeded sampling, and the ledger."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from alambic.config import Config
from alambic.hashing import stable_hash
from alambic.models import ChatModel, Completion, Message, Sampling, teacher_id
from alambic.store import Item, Ledger
from alambic.store.ledger import GroupCommitWriter, StoredResponse, insert_items, insert_response
from alambic.synth.chunking import Chunk
from alambic.synth.prompts import Prompts

STAGE = "synth"


@dataclass(frozen=True)
class KeyedChunk:
    key: str
    chunk: Chunk
    split: str = "train"


class Engine:
    def __init__(self, config: Config, ledger: Ledger, prompts: Prompts, teacher: ChatModel, run_id: str) -> None:
        self.config = config
        self.settings = config.synth
        self.ledger = ledger
        self.prompts = prompts
        self.teacher = teacher
        self.teacher_key = teacher_id(config.teacher)
        self.run_id = run_id
        self.business = config.project.business
        self.system_prompt = config.project.resolved_system_prompt()
        self.failures: Counter[str] = Counter()
        self.writer = GroupCommitWriter(ledger.path)

    def close(self) -> None:
        self.writer.close()

    def sampling(self, key: str, max_tokens: int, **extra: Any) -> Sampling:
        # A seed derived from the request makes a re-run after a crash ask for exactly the same thing.
        seed = int(key[:8], 16) % (2**31)
        return Sampling(temperature=self.settings.temperature, max_tokens=max_tokens, seed=seed, **extra)

    def messages(self, prompt: str, **values: Any) -> list[Message]:
        """The system and user messages of a prompt pair `<prompt>.system.j2` and `<prompt>.user.j2`."""
        values = {"business": self.business, **values}
        return [
            {"role": "system", "content": self.prompts.render(f"{prompt}.system", **values)},
            {"role": "user", "content": self.prompts.render(f"{prompt}.user", **values)},
        ]

    def response_key(self, messages: list[Message], sampling: Sampling) -> str:
        return stable_hash("response", self.teacher_key, messages, sampling)

    async def ask(self, recipe: str, messages: list[Message], sampling: Sampling) -> Completion:
        """The teacher's answer, from the response cache if this exact request was ever paid for."""
        cache_key = self.response_key(messages, sampling)
        cached = self.ledger.response(cache_key)
        if cached is not None:
            return Completion(
                cached.text,
                cached.prompt_tokens,
                cached.completion_tokens,
                cached.finish_reason,
                cached.endpoint,
                logprobs=self.ledger.logprobs(cache_key) if sampling.top_logprobs else None,
            )
        began = time.monotonic()
        completion = await self.teacher.achat(messages, sampling)
        stored = StoredResponse(
            completion.text,
            completion.finish_reason,
            completion.prompt_tokens,
            completion.completion_tokens,
            completion.endpoint,
        )
        request = {"messages": messages, "sampling": dataclasses.asdict(sampling)}
        seconds, logprobs = time.monotonic() - began, completion.logprobs
        await self.writer.write(
            lambda db: insert_response(db, cache_key, self.teacher_key, recipe, request, stored, seconds, logprobs)
        )
        return completion

    async def store(self, item: Item, parents: list[str]) -> bool:
        """Store an item; returns once it is on disk."""
        return await self.writer.write(lambda db: insert_items(db, [(item, parents)])) == 1

    async def fail(self, key: str, kind: str, exc: Exception, payload: dict[str, Any], parents: list[str]) -> None:
        reason = f"teacher_error: {exc}" if str(exc) else f"teacher_error: {type(exc).__name__}"
        self.failures[type(exc).__name__] += 1
        await self.store(Item(key, self.run_id, STAGE, kind, "failed", payload, reason[:500]), parents)
