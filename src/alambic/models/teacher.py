"""The teacher as every stage asks it: each answer is paid for once, kept in the ledger under the request that
asked for it, and counted in the usage; sampling is seeded by the request, so a run redone after a crash asks
for exactly the same thing and gets the same answer back."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from alambic.config import TeacherSection
from alambic.hashing import stable_hash
from alambic.models import open_teacher, teacher_id
from alambic.models.base import ChatModel, Completion, Message, Sampling
from alambic.store import Ledger
from alambic.store.ledger import GroupCommitWriter, StoredResponse, insert_response


class Teacher:
    """A cached, seeded, usage-counted client over any backend. `writer` is shared with a stage that commits
    its own items in the same group commits; otherwise the client opens one of its own."""

    def __init__(
        self,
        model: ChatModel,
        key: str,
        ledger: Ledger,
        temperature: float = 0.0,
        writer: GroupCommitWriter | None = None,
    ) -> None:
        self.model = model
        self.key = key
        self.ledger = ledger
        self.temperature = temperature
        self._owns_writer = writer is None
        self.writer = writer or GroupCommitWriter(ledger.path)

    @classmethod
    def open(cls, section: TeacherSection, project_root: Path, ledger: Ledger, temperature: float = 0.0) -> Teacher:
        return cls(open_teacher(section, project_root), teacher_id(section), ledger, temperature)

    @property
    def parallel(self) -> int:
        return self.model.parallel

    def sampling(self, key: str, max_tokens: int, **extra: Any) -> Sampling:
        """Sampling at the client's temperature with a seed derived from the request's key."""
        seed = int(key[:8], 16) % (2**31)
        return Sampling(temperature=self.temperature, max_tokens=max_tokens, seed=seed, **extra)

    def response_key(self, messages: list[Message], sampling: Sampling) -> str:
        return stable_hash("response", self.key, messages, sampling)

    async def ask(self, purpose: str, messages: list[Message], sampling: Sampling) -> Completion:
        """The teacher's answer, from the ledger if this exact request was ever paid for. `purpose` is what
        the usage is counted under (a recipe, "judge", "evaluate")."""
        cache_key = self.response_key(messages, sampling)
        cached = self.ledger.response(cache_key)
        if cached is not None:
            return Completion(
                cached.text,
                cached.prompt_tokens,
                cached.completion_tokens,
                cached.finish_reason,
                cached.endpoint,
                seconds=cached.seconds,
                logprobs=self.ledger.logprobs(cache_key) if sampling.top_logprobs else None,
            )
        began = time.monotonic()
        completion = await self.model.achat(messages, sampling)
        seconds = time.monotonic() - began
        stored = StoredResponse(
            completion.text,
            completion.finish_reason,
            completion.prompt_tokens,
            completion.completion_tokens,
            completion.endpoint,
        )
        request = {"messages": messages, "sampling": dataclasses.asdict(sampling)}
        await self.writer.write(
            lambda db: insert_response(db, cache_key, self.key, purpose, request, stored, seconds, completion.logprobs)
        )
        return completion

    async def aclose(self) -> None:
        await self.model.aclose()
        if self._owns_writer:
            self.writer.close()
