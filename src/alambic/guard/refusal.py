"""Whether a model's answer declines to help: the one pattern classifier that synth, curate and eval share."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from alambic.hashing import stable_hash
from alambic.models.teacher import Teacher
from alambic.prompts import Prompts
from alambic.text import contains

REFUSAL = re.compile(
    r"\b(?:i\s*(?:can(?:'|no)?t|cannot|won't|will not|am not able to|'m not able to|am unable to|'m unable to)"
    r"\s+(?:help|assist|provide|do|share|comply|support|give|write|create|answer)"
    r"|(?:i'm|i am) (?:sorry|afraid),? but i (?:can(?:'|no)?t|cannot|won't|will not)"
    r"|not (?:able|allowed|permitted) to (?:help|assist|share|provide)"
    r"|not something (?:i|we) can (?:help|assist) with|(?:can(?:'|no)?t|cannot) help (?:you )?with (?:that|this)"
    r"|je ne peux pas|no puedo|ich kann (?:ihnen )?(?:dabei )?nicht)"
    r"|لا (?:أستطيع|يمكنني|أقدر على)|لن أتمكن من|لا يسعني",
    re.IGNORECASE,
)


def is_refusal(text: str, refusal_message: str = "") -> bool:
    """True if the text declines to help (in English, Arabic, French, Spanish or German), or states the
    business's own refusal message (its first sentence), whatever its words."""
    if REFUSAL.search(text) is not None:
        return True
    first = re.split(r"(?<=[.!?؟])\s", refusal_message.strip(), maxsplit=1)[0]
    return bool(first) and contains(text, first)


REFUSAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"refusal": {"type": "boolean"}},
    "required": ["refusal"],
}


class RefusalJudge:
    """The teacher says whether each answer refuses its request: the second classifier beside the pattern."""

    def __init__(self, teacher: Teacher, prompts: Prompts) -> None:
        self.teacher, self.prompts = teacher, prompts

    async def judge(self, pairs: list[tuple[str, str]]) -> list[bool | None]:
        """For each (request, answer): True if a refusal, None where the judge's answer was unusable."""
        semaphore = asyncio.Semaphore(max(1, self.teacher.parallel))

        async def one(request: str, answer: str) -> bool | None:
            messages = self.prompts.messages("refusal-judge", request=request, answer=answer)
            sampling = self.teacher.sampling(stable_hash("refusal-judge", messages), 16, json_schema=REFUSAL_SCHEMA)
            async with semaphore:
                completion = await self.teacher.ask("refusal-judge", messages, sampling)
            try:
                verdict = json.loads(completion.text)["refusal"]
            except (ValueError, KeyError, TypeError):
                return None
            return verdict if isinstance(verdict, bool) else None

        return list(await asyncio.gather(*(one(request, answer) for request, answer in pairs)))
