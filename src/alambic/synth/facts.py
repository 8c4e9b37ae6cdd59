"""The answer fact of each grounded question: the shortest span of its chunk that answers it (a price, a date, a
name, a rule), written by the teacher and kept only if it really is in the chunk, so that the check holds even
with a weak teacher. A question the chunk does not answer has "handoff" as its fact. Curation rejects training
answers without their fact, and eval counts how many answers state it."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from alambic.facts import HANDOFF, KIND, checked_fact, fact_key, fact_version
from alambic.store import Item
from alambic.synth.engine import STAGE, Engine, KeyedChunk


@dataclass(frozen=True)
class FactRequest:
    item: str  # the key of the training or held-out item
    question: str
    chunk: KeyedChunk


async def write_facts(
    engine: Engine, requests: list[FactRequest], on_done: Callable[[], None] | None = None
) -> Counter[str]:
    """Asks the teacher for each item's fact (each paid for once), stores it as a "fact" item whose parent is
    the item, and counts the outcomes: "checked", "handoff" and each reason a fact was not kept."""
    version = fact_version(engine.prompts)
    semaphore = asyncio.Semaphore(max(1, 2 * engine.teacher.parallel))
    outcomes: Counter[str] = Counter()

    async def one(request: FactRequest) -> None:
        key = fact_key(version, request.item)
        stored = engine.ledger.item(key)
        if stored is None or stored.status == "failed":
            async with semaphore:
                stored = await _ask(engine, key, request)
        if stored.status == "failed":
            outcomes["failed"] += 1
        else:
            fact, reason = checked_fact(stored.payload["raw"], request.chunk.chunk.text, request.question)
            outcomes["handoff" if fact == HANDOFF else "checked" if fact else reason or "no_fact"] += 1
        if on_done is not None:
            on_done()

    await asyncio.gather(*(one(request) for request in requests))
    return outcomes


async def _ask(engine: Engine, key: str, request: FactRequest) -> Item:
    messages = engine.messages("fact", chunk=request.chunk.chunk.text, question=request.question)
    base = {"item": request.item, "question": request.question, "chunk": request.chunk.key}
    try:
        completion = await engine.teacher.ask("fact", messages, engine.teacher.sampling(key, 64))
    except Exception as exc:
        await engine.fail(key, KIND, exc, {**base, "fact": None, "usage": [0, 0]}, [request.item])
        stored = engine.ledger.item(key)
        assert stored is not None
        return stored
    fact, reason = checked_fact(completion.text, request.chunk.chunk.text, request.question)
    payload = {
        **base,
        "fact": fact,
        "raw": completion.text,
        "usage": [completion.prompt_tokens, completion.completion_tokens],
    }
    item = Item(key, engine.run_id, STAGE, KIND, "ok" if reason is None else "rejected", payload, reason)
    await engine.store(item, [request.item, request.chunk.key])
    return item
