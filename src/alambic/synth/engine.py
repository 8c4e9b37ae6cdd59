"""What every recipe shares: the teacher client, the prompts, and the ledger."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from alambic.agent.retrieval import word_rarity
from alambic.config import Config
from alambic.documents import Chunk
from alambic.models import ChatModel, Message, teacher_id
from alambic.models.teacher import Teacher
from alambic.prompts import Prompts
from alambic.store import Item, Ledger
from alambic.store.ledger import GroupCommitWriter, insert_items

STAGE = "synth"


@dataclass(frozen=True)
class KeyedChunk:
    key: str
    chunk: Chunk
    split: str = "train"
    citation: str = ""  # where the chunk came from: "warranty.pdf, page 2", "faq.md › Returns"


class Engine:
    """What a recipe asks for: the teacher (cached and seeded), its prompts, and a ledger writer for its items."""

    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        prompts: Prompts,
        model: ChatModel,
        run_id: str,
        chunks: Sequence[KeyedChunk] = (),
    ) -> None:
        self.config = config
        self.settings = config.synth
        self.ledger = ledger
        self.prompts = prompts
        self.run_id = run_id
        self.business = config.project.business
        self.system_prompt = config.project.resolved_system_prompt()
        self.failures: Counter[str] = Counter()
        self.writer = GroupCommitWriter(ledger.path)
        self.teacher = Teacher(model, teacher_id(config.teacher), ledger, self.settings.temperature, self.writer)
        self.chunk_texts = [chunk.chunk.text for chunk in chunks]

    @cached_property
    def rarity(self) -> Callable[[Iterable[str]], dict[str, float]]:
        """Each word's rarity over the chunks, which weighs how grounded an answer is (read only by best-of-n)."""
        return word_rarity(self.chunk_texts)

    def close(self) -> None:
        self.writer.close()

    def messages(self, prompt: str, **values: Any) -> list[Message]:
        """The system and user messages of a prompt pair `<prompt>.system.j2` and `<prompt>.user.j2`."""
        return self.prompts.messages(prompt, business=self.business, **values)

    async def store(self, item: Item, parents: list[str]) -> bool:
        """Store an item; returns once it is on disk."""
        return await self.writer.write(lambda db: insert_items(db, [(item, parents)])) == 1

    async def fail(self, key: str, kind: str, exc: Exception, payload: dict[str, Any], parents: list[str]) -> None:
        reason = f"teacher_error: {exc}" if str(exc) else f"teacher_error: {type(exc).__name__}"
        self.failures[type(exc).__name__] += 1
        await self.store(Item(key, self.run_id, STAGE, kind, "failed", payload, reason[:500]), parents)
