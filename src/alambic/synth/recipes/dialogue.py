"""Multi-turn support conversations with customer personas, grounded in a chunk, ending in resolution or handoff."""

from __future__ import annotations

import json
from typing import Any

from alambic.guard.refusal import is_refusal
from alambic.store import Item
from alambic.synth.curation import answer_problem
from alambic.synth.engine import STAGE, Engine, KeyedChunk
from alambic.synth.recipes.base import Recipe, conversation

PERSONAS = (
    "an angry customer whose order went wrong",
    "a confused customer who is not sure what to ask",
    "a non-native speaker who writes short, simple sentences",
    "a busy customer who wants a quick, exact answer",
)
DIALOGUE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "turns": {
            "type": "array",
            "minItems": 4,
            "maxItems": 8,
            "items": {
                "type": "object",
                "properties": {"speaker": {"enum": ["customer", "assistant"]}, "text": {"type": "string"}},
                "required": ["speaker", "text"],
            },
        },
        "outcome": {"enum": ["resolved", "handoff"]},
    },
    "required": ["turns", "outcome"],
}


def dialogue_problem(raw: str, finish_reason: str, min_words: int) -> tuple[list[str], str | None]:
    """The turns of a dialogue the teacher wrote as JSON, and why it is unusable (or None)."""
    if finish_reason == "length":
        return [], "truncated_answer"
    try:
        data = json.loads(raw)
        turns = [(turn["speaker"], str(turn["text"]).strip()) for turn in data["turns"]]
        outcome = str(data["outcome"])
    except (ValueError, KeyError, TypeError):
        return [], "malformed_json"
    speakers = [speaker for speaker, _ in turns]
    expected = ["customer", "assistant"] * (len(turns) // 2)
    if len(turns) < 4 or speakers != expected:
        return [], "turns_out_of_order"
    if outcome not in ("resolved", "handoff"):
        return [], "unknown_outcome"
    texts = [text for _, text in turns]
    for customer, reply in zip(texts[::2], texts[1::2], strict=True):
        if problem := answer_problem(customer, reply, "stop", min_words):
            return texts, problem
        if is_refusal(reply):
            return texts, "refusal"
    return texts, None


class Dialogue(Recipe):
    name = "dialogue"
    kind = "dialogue"
    prompt_names = ("dialogue.system", "dialogue.user")

    def __init__(self, engine: Engine, chunks: list[KeyedChunk]) -> None:
        super().__init__(engine)
        self.chunks = chunks

    def max_groups(self) -> int:
        return len(self.chunks) * min(len(PERSONAS), self.engine.settings.max_rounds)

    async def run_group(self, index: int) -> int:
        chunk = self.chunks[index % len(self.chunks)]
        persona = PERSONAS[(index // len(self.chunks) + index) % len(PERSONAS)]
        key = self.key("dialogue", chunk.key, persona)
        if (stored := self.settled(key)) is not None:
            return int(stored.status == "ok")
        engine = self.engine
        messages = engine.messages("dialogue", chunk=chunk.chunk.text, persona=persona)
        sampling = engine.teacher.sampling(key, engine.settings.dialogue_max_tokens, json_schema=DIALOGUE_SCHEMA)
        base = {
            "recipe": self.name,
            "fingerprint": self.fingerprint,
            "order": [index, 0],
            "chunk": chunk.key,
            "doc": chunk.chunk.doc,
            "citation": chunk.citation,
            "persona": persona,
        }
        try:
            completion = await engine.teacher.ask(self.name, messages, sampling)
        except Exception as exc:
            await engine.fail(key, self.kind, exc, {**base, "usage": [0, 0]}, [chunk.key])
            return 0
        texts, reason = dialogue_problem(completion.text, completion.finish_reason, 2)
        payload = {
            **base,
            "raw": completion.text,
            "messages": conversation(engine.system_prompt, texts) if texts else [],
            "question": texts[0] if texts else "",
            "answer": texts[-1] if texts else "",
            "teacher": engine.teacher.key,
            "usage": [completion.prompt_tokens, completion.completion_tokens],
        }
        status = "ok" if reason is None else "rejected"
        await engine.store(Item(key, engine.run_id, STAGE, self.kind, status, payload, reason), [chunk.key])
        return int(status == "ok")
