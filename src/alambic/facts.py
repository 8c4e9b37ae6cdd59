"""Answer facts, as synth writes them and curate and eval read them: for a question grounded in a chunk, the
shortest span of the chunk that answers it, or "handoff" when the chunk does not answer it."""

from __future__ import annotations

from alambic.hashing import stable_hash
from alambic.prompts import Prompts
from alambic.store import Ledger
from alambic.text import normalise

KIND = "fact"
HANDOFF = "handoff"
PROMPT = ("fact.system", "fact.user")


def contains(text: str, fact: str) -> bool:
    """True if `fact` occurs in `text` as whole words, compared folded: case, diacritics, Arabic letter
    variants and punctuation do not matter."""
    wanted = normalise(fact)
    return bool(wanted) and f" {wanted} " in f" {normalise(text)} "


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
        if stored is not None and stored.status == "ok" and stored.payload.get("fact"):
            found[key] = stored.payload["fact"]
    return found
