"""Whether a model's answer declines to help: the one pattern classifier that synth, curate and eval share."""

from __future__ import annotations

import re

REFUSAL = re.compile(
    r"\b(?:i\s*(?:can(?:'|no)?t|cannot|won't|will not|am not able to|'m not able to|am unable to|'m unable to)"
    r"\s+(?:help|assist|provide|do|share|comply|support|give|write|create|answer)"
    r"|(?:i'm|i am) (?:sorry|afraid),? but i (?:can(?:'|no)?t|cannot|won't|will not)"
    r"|not (?:able|allowed|permitted) to (?:help|assist|share|provide)"
    r"|je ne peux pas|no puedo|ich kann (?:ihnen )?(?:dabei )?nicht)"
    r"|لا (?:أستطيع|يمكنني|أقدر على)|لن أتمكن من|لا يسعني",
    re.IGNORECASE,
)


def is_refusal(text: str) -> bool:
    """True if the text declines to help (in English, Arabic, French, Spanish or German)."""
    return REFUSAL.search(text) is not None
