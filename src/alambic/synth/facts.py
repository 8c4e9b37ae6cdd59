"""The answer fact of each grounded question: the shortest span of its chunk that answers it (a price, a date, a
name, a rule), written by the teacher and kept only if it really is in the chunk, so that the check holds even
with a weak teacher. A question the chunk does not answer has "handoff" as its fact. Curation rejects training
answers without their fact, and eval counts how many answers state it."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from alambic.facts import HANDOFF, KIND, contains, fact_key, fact_version
from alambic.store import Item
from alambic.synth.engine import STAGE, Engine, KeyedChunk
from alambic.text import folded, words

NO_ANSWER = ("none", "no answer", "لا يوجد", "لا شيء")
MAX_FACT_WORDS = 30
QUOTES = " \t\"'“”‘’«»`*-•:."


@dataclass(frozen=True)
class FactRequest:
    item: str  # the key of the training or held-out item
    question: str
    chunk: KeyedChunk


def checked_fact(raw: str, chunk: str) -> tuple[str | None, str | None]:
    """(the fact, None) when the teacher's answer is a span of the chunk or says the chunk does not answer;
    (None, the reason) otherwise."""
    lines = [line.strip(QUOTES) for line in raw.strip().splitlines() if line.strip(QUOTES)]
    if not lines:
        return None, "no_fact"
    span = lines[0].removeprefix("Answer").strip(QUOTES)
    if folded(span).strip(QUOTES) in NO_ANSWER:
        return HANDOFF, None
    if len(words(span)) > MAX_FACT_WORDS:
        return None, "fact_too_long"
    if not contains(chunk, span):
        return None, "fact_not_in_chunk"
    return span, None


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
        fact = stored.payload.get("fact")
        outcomes["handoff" if fact == HANDOFF else "checked" if fact else stored.reason or "failed"] += 1
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
    fact, reason = checked_fact(completion.text, request.chunk.chunk.text)
    payload = {
        **base,
        "fact": fact,
        "raw": completion.text,
        "usage": [completion.prompt_tokens, completion.completion_tokens],
    }
    item = Item(key, engine.run_id, STAGE, KIND, "ok" if reason is None else "rejected", payload, reason)
    await engine.store(item, [request.item, request.chunk.key])
    return item
