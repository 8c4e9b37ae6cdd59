"""Training for the agent the student will be: each single-turn question is trained with the passages retrieval
actually returns for it, at their rank, the right one or not, so the student learns to read them and to ignore
the ones that do not answer. Passages are dropped from the lowest rank until the example fits max_seq_len, so
the teacher's answer is never cut.

The same share of every kind of item stays bare, as the bare student is asked. The form of a prompt must never
tell the student which kind of answer is wanted: when grounded questions all carried passages and only the safety
recipe's refusals came bare, the whole 30-layer student learnt to refuse 0.92 of harmless bare questions.

Imported conversations (logs, captured traffic) stay as they were asked: a capture may already carry passages, and
the safety stage asks the student both bare and as the agent asks, so whatever they teach, a harmful answer among
them included, shows in one form or the other. A creator's own replies were never asked of any model: they are her
voice, which the agent must keep, so they follow the bare share like the teacher's items."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

from alambic.agent.prompting import RETRIEVED, agent_messages
from alambic.agent.retrieval import Retriever
from alambic.dataset import in_creator_voice
from alambic.hashing import stable_hash
from alambic.prompts import Prompts
from alambic.store import Item

SINGLE_TURN = ("system", "user", "assistant")
AS_ASKED = ("import",)  # item kinds trained exactly as they were asked, a creator's own replies excepted


def with_retrieved_context(
    items: list[Item], retriever: Retriever, prompts: Prompts, tokenizer: Any, max_len: int, bare_share: float
) -> list[Item]:
    """The items, each single-turn one with its user turn as the agent asks it, except `bare_share` of every
    kind, which stay bare; multi-turn items unchanged."""
    bare = bare_keys(items, bare_share)
    return [
        item
        if item.key in bare or single_turn_question(item) is None
        else _with_context(item, retriever, prompts, tokenizer, max_len)
        for item in items
    ]


def bare_keys(items: list[Item], share: float) -> set[str]:
    """The same share of the items of each kind, chosen by a hash of their keys."""
    by_kind: dict[str, list[str]] = defaultdict(list)
    for item in items:
        if single_turn_question(item) is not None:
            by_kind[item.kind].append(item.key)
    chosen: set[str] = set()
    for keys in by_kind.values():
        keys.sort(key=lambda key: stable_hash("bare", key))
        chosen.update(keys[: round(share * len(keys))])
    return chosen


def single_turn_question(item: Item) -> str | None:
    """The user turn of a system, user, assistant item; None for a conversation or an exchange kept as asked."""
    messages = item.payload["messages"]
    if kept_as_asked(item) or tuple(message["role"] for message in messages) != SINGLE_TURN:
        return None
    return str(messages[1]["content"])


def kept_as_asked(item: Item) -> bool:
    return item.kind in AS_ASKED and not in_creator_voice(item)


def _with_context(item: Item, retriever: Retriever, prompts: Prompts, tokenizer: Any, max_len: int) -> Item:
    question = single_turn_question(item)
    assert question is not None
    messages = item.payload["messages"]
    system, answer = messages[0]["content"], messages[2]
    passages = retriever.search(question, RETRIEVED)
    while True:
        asked = [*agent_messages(prompts, system, question, passages), answer]
        text = tokenizer.apply_chat_template(asked, tokenize=False)
        if not passages or len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= max_len:
            break
        passages = passages[:-1]
    payload = {**item.payload, "messages": asked, "passages": [passage.key for passage in passages]}
    return dataclasses.replace(item, payload=payload)
