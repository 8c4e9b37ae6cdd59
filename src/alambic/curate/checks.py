"""Rule checks on one item: length bounds, script of the answer against the question, refusals."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

from alambic.config import CurateSection
from alambic.synth.curation import is_refusal

WORD = re.compile(r"\w+", re.UNICODE)
ARABIC_VARIANTS = str.maketrans({"أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا", "ى": "ي", "ة": "ه", "ـ": None})


def normalised_words(text: str) -> list[str]:
    """Words for comparisons across scripts: NFKC, case-folded, diacritics and tatweel removed,
    Arabic letter variants unified (so undiacritised and diacritised Arabic compare equal)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch) != "Mn")
    return WORD.findall(text.translate(ARABIC_VARIANTS))


def script(text: str) -> str | None:
    """The main script of a text's letters ("ARABIC", "LATIN", "CJK", ...), or None if it has no letters."""
    counts: Counter[str] = Counter()
    for ch in text:
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            counts[name.split(" ")[0] if name else "UNKNOWN"] += 1
    return counts.most_common(1)[0][0] if counts else None


def item_problem(kind: str, user_turns: list[str], answers: list[str], settings: CurateSection) -> str | None:
    """Why an item fails the rule checks, or None."""
    for answer in answers:
        if len(answer.strip()) < settings.min_chars:
            return "too_short"
        if len(answer) > settings.max_chars:
            return "too_long"
        if kind != "safety" and is_refusal(answer):
            return "refusal"
    if settings.language_check and user_turns and answers:
        asked, answered = script(" ".join(user_turns)), script(" ".join(answers))
        if asked and answered and asked != answered:
            return "wrong_language"
    return None
