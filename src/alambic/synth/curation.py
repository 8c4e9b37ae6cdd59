"""Checks on each generated item, and the keys that spot exact duplicates in any script."""

from __future__ import annotations

import re
import unicodedata

QUESTION_MARKS = ("?", "؟", "？")
LIST_MARKER = re.compile(r"^\s*(?:[-*•·]+|\(?\d{1,2}[.):]|[Qq](?:uestion)?\s*\d*[.:])\s*")
TEMPLATE_LEAK = re.compile(r"<\|[a-z_]+\|>|^(?:user|assistant|system)\s*:", re.IGNORECASE | re.MULTILINE)


def normalise(text: str) -> str:
    """Canonical form for duplicate keys: NFKC, case-folded, no punctuation, single spaces."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(ch).startswith(("P", "S")) else ch for ch in text)
    return " ".join(text.split())


REFUSAL = re.compile(
    r"\b(?:i\s*(?:can(?:'|no)?t|cannot|won't|will not|am not able to|'m not able to|am unable to|'m unable to)"
    r"\s+(?:help|assist|provide|do|share|comply|support|give|write|create|answer)"
    r"|(?:i'm|i am) (?:sorry|afraid),? but i (?:can(?:'|no)?t|cannot|won't|will not)"
    r"|not (?:able|allowed|permitted) to (?:help|assist|share|provide)"
    r"|je ne peux pas|no puedo|ich kann (?:ihnen )?(?:dabei )?nicht)"
    r"|لا (?:أستطيع|يمكنني|أقدر على)|لن أتمكن من|لا يسعني",
    re.IGNORECASE,
)


def parse_lines(raw: str, limit: int, questions_only: bool) -> list[str]:
    """Distinct lines of a teacher's list (questions, or tasks), without bullets or numbering."""
    lines: list[str] = []
    seen: set[str] = set()
    for line in raw.splitlines():
        line = LIST_MARKER.sub("", line.strip()).strip().strip('"“”')
        if questions_only and not line.endswith(QUESTION_MARKS):
            continue
        if not 3 <= len(line.split()) <= 60:
            continue
        key = normalise(line)
        if key not in seen:
            seen.add(key)
            lines.append(line)
        if len(lines) == limit:
            break
    return lines


def is_refusal(text: str) -> bool:
    """True if the text declines to help (in English, Arabic, French, Spanish or German)."""
    return REFUSAL.search(text) is not None


def answer_problem(question: str, answer: str, finish_reason: str, min_words: int) -> str | None:
    """Why an answer must be rejected, or None if it is fit to train on."""
    if not answer.strip():
        return "empty_answer"
    if TEMPLATE_LEAK.search(answer):
        return "malformed_answer"
    if finish_reason == "length":
        return "truncated_answer"
    if len(answer.split()) < min_words:
        return "too_short"
    if normalise(answer) == normalise(question):
        return "echoes_question"
    return None
