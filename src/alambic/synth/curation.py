"""Checks on each generated item, and the keys that spot exact duplicates in any script."""

from __future__ import annotations

import re

from alambic.text import normalise

QUESTION_MARKS = ("?", "؟", "？")
# A list item's marker: bullets, "1." "1)" "(1)" "#1" "1 -", "Q1:" "Question 1:", Arabic "سؤال 1:".
LIST_MARKER = re.compile(
    r"^\s*(?:[-*•·–—]+|\(?#?[0-9٠-٩]{1,2}(?:[.):](?=\s|$)|\s+[-–—])|(?:[Qq](?:uestion)?|سؤال)\s*[0-9٠-٩]*\s*[.:)-])\s*"
)
EMPHASIS = re.compile(r"^[*_`]+|[*_`]+$")
QUOTES = '"“”«»„'
# A teacher's words before its list or its item: a line that only introduces ("Here are some questions:"), or a
# lead-in before the item itself ("One possible question that can be asked is: ...", "Sure! Here's one: ...").
INTRODUCTION = re.compile(r"[:：]\s*$")
LEAD_IN = re.compile(
    r"^[^:：?؟]{0,120}?\b(?:questions?|tasks?|here(?:'s| is| are)|sure|example|possible)\b"
    r"[^:：?؟]{0,60}[:：]\s*",
    re.IGNORECASE,
)
QUOTED_AFTER_COLON = re.compile(r"^[^:：?؟\"“”«»„]{1,120}[:：]\s*(?=[\"“«„])")
# Our own prompts' words in a question: it is about the task, not something a customer would ask.
PROMPT_LEAK = re.compile(
    r"\bthis passage\b|\b(?:the|this) reference text\b|\b(?:factual|fictional|how-to) questions?\b", re.I
)
TEMPLATE_LEAK = re.compile(r"<\|[a-z_]+\|>|^(?:user|assistant|system)\s*:", re.IGNORECASE | re.MULTILINE)


def clean_item(text: str) -> str:
    """One item a teacher wrote (a question, a task, a request), as a customer would type it: without the list
    marker, emphasis, lead-in and wrapping quotes around it, and with no quote left open by their removal."""
    previous = None
    while text != previous:
        previous = text
        text = EMPHASIS.sub("", text.strip()).strip()
        text = LIST_MARKER.sub("", text)
        text = QUOTED_AFTER_COLON.sub("", text)
        text = balance_quotes(LEAD_IN.sub("", text))
    return text


def balance_quotes(text: str) -> str:
    """Without quotes that wrap the whole text, or a quote at either end that nothing matches."""
    count = sum(text.count(mark) for mark in QUOTES)
    if len(text) > 1 and text[0] in QUOTES and text[-1] in QUOTES and count == 2:
        return text[1:-1].strip()
    if count % 2 == 1 and text[:1] in QUOTES:
        return text[1:].strip()
    if count % 2 == 1 and text[-1:] in QUOTES:
        return text[:-1].strip()
    return text


def parse_lines(raw: str, limit: int, questions_only: bool) -> list[str]:
    """Distinct items of a teacher's list (questions, or tasks), each cleaned by `clean_item`; lines that only
    introduce the list are skipped."""
    lines: list[str] = []
    seen: set[str] = set()
    for line in raw.splitlines():
        if INTRODUCTION.search(line):
            continue
        line = clean_item(line)
        if questions_only and (not line.endswith(QUESTION_MARKS) or PROMPT_LEAK.search(line)):
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
    if echoes(question, answer):
        return "echoes_question"
    return None


def echoes(question: str, answer: str) -> bool:
    """Whether the answer restates its question: says it word for word, whatever it adds around it. A question
    of one or two words may be said in a real answer, so there only an answer that is nothing else counts."""
    asked, said = normalise(question), normalise(answer)
    if not asked:
        return False
    if len(asked.split()) < 3:
        return said == asked
    return f" {asked} " in f" {said} "
