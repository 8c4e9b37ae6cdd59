"""Training for the agent the student will be: each grounded question is trained with the passages retrieval
actually returns for it, at their rank, the right one or not, so the student learns to read them and to ignore
the ones that do not answer. Passages are dropped from the lowest rank until the example fits max_seq_len, so
the teacher's answer is never cut."""

from __future__ import annotations

import dataclasses
from typing import Any

from alambic.agent.prompting import RETRIEVED, agent_messages
from alambic.agent.retrieval import Retriever
from alambic.dataset import grounded_question
from alambic.prompts import Prompts
from alambic.store import Item


def with_retrieved_context(
    items: list[Item], retriever: Retriever, prompts: Prompts, tokenizer: Any, max_len: int
) -> list[Item]:
    """The items, each grounded one with its user turn as the agent asks it; the others unchanged."""
    return [_with_context(item, retriever, prompts, tokenizer, max_len) for item in items]


def _with_context(item: Item, retriever: Retriever, prompts: Prompts, tokenizer: Any, max_len: int) -> Item:
    question = grounded_question(item)
    if question is None:
        return item
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
