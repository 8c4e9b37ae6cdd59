"""LLM-as-judge: the teacher scores each item 1-5 on a rubric, in JSON; a share is asked twice, to
measure how far the judge agrees with itself."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from alambic.hashing import stable_hash
from alambic.models import Message
from alambic.models.teacher import Teacher
from alambic.prompts import Prompts

CRITERIA = ("grounded", "helpful", "correct")
SCORE = {"enum": [1, 2, 3, 4, 5]}
JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {**{name: SCORE for name in CRITERIA}, "reason": {"type": "string"}},
    "required": [*CRITERIA, "reason"],
}
MAX_TOKENS = 160


@dataclass
class Judgement:
    score: float | None  # mean over the criteria; None if the judge's answer was unusable
    scores: dict[str, int]
    reason: str


def parse_judgement(text: str) -> Judgement:
    try:
        data = json.loads(text)
        scores = {name: int(data[name]) for name in CRITERIA}
    except (ValueError, KeyError, TypeError):
        return Judgement(None, {}, "unparseable judgement")
    if not all(1 <= value <= 5 for value in scores.values()):
        return Judgement(None, scores, "score out of range")
    return Judgement(sum(scores.values()) / len(scores), scores, str(data.get("reason", ""))[:300])


class Judge:
    def __init__(self, teacher: Teacher, prompts: Prompts, business: str) -> None:
        self.teacher, self.prompts, self.business = teacher, prompts, business

    async def judge(self, conversation: list[Message], chunk: str, attempt: int) -> Judgement:
        shown = [m for m in conversation if m["role"] != "system"]
        messages = self.prompts.messages("judge", business=self.business, conversation=shown, chunk=chunk)
        key = stable_hash("judge", messages, attempt)
        sampling = self.teacher.sampling(key, MAX_TOKENS, json_schema=JUDGE_SCHEMA)
        completion = await self.teacher.ask("judge", messages, sampling)
        return parse_judgement(completion.text)

    async def judge_all(
        self, todo: list[tuple[str, list[Message], str, bool]], on_done: Any
    ) -> dict[str, list[Judgement]]:
        """{key: [first judgement, re-ask if asked]} for (key, conversation, chunk, re-ask) rows."""
        results: dict[str, list[Judgement]] = {}
        pending = iter(todo)

        async def worker() -> None:
            for key, conversation, chunk, reask in pending:
                attempts = (0, 1) if reask else (0,)
                results[key] = list(await asyncio.gather(*(self.judge(conversation, chunk, a) for a in attempts)))
                on_done()

        await asyncio.gather(*(worker() for _ in range(max(1, self.teacher.parallel))))
        return results


def agreement(judgements: dict[str, list[Judgement]], threshold: float) -> dict[str, Any]:
    """How far the judge agrees with itself on a re-ask: raw agreement of its pass/fail verdicts, Cohen's
    kappa (agreement beyond chance: a judge that gives everything the same verdict scores none, however
    consistent), and the mean score difference."""
    pairs = [
        (a, b)
        for a, b in (j for j in judgements.values() if len(j) == 2)
        if a.score is not None and b.score is not None
    ]
    if not pairs:
        return {"pairs": 0, "verdict_agreement": None, "kappa": None, "mean_abs_score_difference": None}
    first = [a.score >= threshold for a, _ in pairs]
    second = [b.score >= threshold for _, b in pairs]
    observed = sum(x == y for x, y in zip(first, second, strict=True)) / len(pairs)
    p_first, p_second = sum(first) / len(pairs), sum(second) / len(pairs)
    chance = p_first * p_second + (1 - p_first) * (1 - p_second)
    kappa = (observed - chance) / (1 - chance) if chance < 1 else 0.0
    difference = sum(abs(a.score - b.score) for a, b in pairs) / len(pairs)
    return {
        "pairs": len(pairs),
        "verdict_agreement": round(observed, 3),
        "kappa": round(kappa, 3),
        "mean_abs_score_difference": round(difference, 3),
    }
