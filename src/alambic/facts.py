"""Answer facts, as synth asks for them and curate and eval read them: for a question grounded in a chunk, the
shortest span of the chunk that answers it, or "handoff" when the chunk does not answer it.

The teacher's answer is kept as it came; the span is checked against the chunk whenever facts are read, with
the rules of the alambic that reads them, so a better check applies to facts already paid for."""

from __future__ import annotations

import re

from alambic.hashing import stable_hash
from alambic.prompts import Prompts
from alambic.store import Item, Ledger
from alambic.text import contains, folded, words

KIND = "fact"
HANDOFF = "handoff"
PROMPT = ("fact.system", "fact.user")
NO_ANSWER = ("none", "no answer", "لا يوجد", "لا شيء")
MAX_FACT_WORDS = 30
QUOTES = " \t\"'“”‘’«»`*-•:."
QUOTED = re.compile(r"[\"“«]([^\"”»\n]{1,300})[\"”»]")


def checked_fact(raw: str, chunk: str, question: str) -> tuple[str | None, str | None]:
    """(the fact, None) when the teacher's answer gives a span of the chunk that says something the question
    does not, or says the chunk does not answer; (None, why not) otherwise. The span may be the answer itself,
    a line of it, or a quotation in it (teachers often write 'The answer is "…"'). Headings and questions are
    not facts."""
    lines = [line.strip(QUOTES) for line in raw.strip().splitlines() if line.strip(QUOTES)]
    if not lines:
        return None, "no_fact"
    if folded(lines[0]).strip(QUOTES) in NO_ANSWER:
        return HANDOFF, None
    candidates = [lines[0].removeprefix("Answer").strip(QUOTES), *QUOTED.findall(raw), *lines[1:]]
    heading, _, body = chunk.partition("\n")  # a chunk starts with its heading path: headings are not facts
    body = body if body.strip() else heading
    found = [
        span
        for span in (candidate.strip(QUOTES) for candidate in candidates)
        if contains(body, span) and " > " not in span and not span.rstrip().endswith("?")
    ]
    if not found:
        return None, "fact_not_in_chunk"
    asked = set(words(question))
    telling = [span for span in found if any(_informative(word) and word not in asked for word in words(span))]
    if not telling:
        return None, "fact_in_question"
    short = [span for span in telling if len(words(span)) <= MAX_FACT_WORDS]
    return (short[0], None) if short else (None, "fact_too_long")


def _informative(word: str) -> bool:
    """A number, or a word long enough not to be a function word ("the", "and", "في", "من")."""
    return any(ch.isdigit() for ch in word) or len(word) > 3


def fact_version(prompts: Prompts) -> str:
    return prompts.version(*PROMPT)


def fact_key(version: str, item_key: str) -> str:
    return stable_hash(KIND, version, item_key)


def answer_facts(ledger: Ledger, prompts: Prompts, item_keys: list[str]) -> dict[str, str]:
    """The checked fact (a span of the chunk, or "handoff") of each item that has one, by item key."""
    version = fact_version(prompts)
    found = {}
    for key in item_keys:
        stored = ledger.item(fact_key(version, key))
        fact = stored_fact(ledger, stored) if stored is not None else None
        if fact is not None:
            found[key] = fact
    return found


def stored_fact(ledger: Ledger, stored: Item) -> str | None:
    """The fact of a stored teacher answer, checked now against its chunk."""
    chunk = ledger.item(stored.payload.get("chunk") or "")
    if stored.status == "failed" or chunk is None or "raw" not in stored.payload:
        return None
    return checked_fact(stored.payload["raw"], chunk.payload["text"], stored.payload.get("question", ""))[0]
