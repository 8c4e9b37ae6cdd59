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


def parse_questions(raw: str, limit: int) -> list[str]:
    """Distinct question lines from a teacher's list, without bullets or numbering."""
    questions: list[str] = []
    seen: set[str] = set()
    for line in raw.splitlines():
        line = LIST_MARKER.sub("", line.strip()).strip().strip('"“”')
        if not line.endswith(QUESTION_MARKS) or not 3 <= len(line.split()) <= 60:
            continue
        key = normalise(line)
        if key not in seen:
            seen.add(key)
            questions.append(line)
        if len(questions) == limit:
            break
    return questions


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
