"""Text as every stage compares it, in any script: one normal form, its words, and the script a text is
written in. Arabic is folded the way its readers read it: diacritics, tatweel and the alef, ya and ta marbuta
variants do not make two words different."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

WORD = re.compile(r"\w+", re.UNICODE)
SENTENCE_BREAK = re.compile(r"(?<=[.!?؟])\s+|(?<=[。！？])\s*")
SENTENCE_ENDS = ".!?؟。！？"
ARABIC_VARIANTS = str.maketrans({"أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا", "ى": "ي", "ة": "ه", "ـ": None})


def folded(text: str) -> str:
    """NFKC, case-folded, without combining marks (diacritics, harakat), Arabic letter variants unified."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch) != "Mn")
    return text.translate(ARABIC_VARIANTS)


def words(text: str) -> list[str]:
    """The words of a folded text: what bag-of-words metrics, shingles and n-grams are made of."""
    return WORD.findall(folded(text))


def normalise(text: str) -> str:
    """A text's canonical form, for exact-duplicate keys: its words, single-spaced."""
    return " ".join(words(text))


def contains(text: str, phrase: str) -> bool:
    """True if `phrase` occurs in `text` as whole words, compared folded: case, diacritics, Arabic letter
    variants and punctuation do not matter."""
    wanted = normalise(phrase)
    return bool(wanted) and f" {wanted} " in f" {normalise(text)} "


def whole_sentences(text: str) -> str:
    """The text up to the end of its last full sentence (or line): what an answer its token budget cut short can
    say whole. The text itself when it ends a sentence, or holds no full one."""
    text = text.rstrip()
    if not text or text.endswith(tuple(SENTENCE_ENDS)):
        return text
    ends = [m.start() for m in SENTENCE_BREAK.finditer(text)] + [m.start() for m in re.finditer("\n", text)]
    return text[: max(ends)].rstrip() if ends else text


def script(text: str) -> str | None:
    """The main script of a text's letters ("ARABIC", "LATIN", "CJK", ...), or None if it has no letters."""
    counts: Counter[str] = Counter()
    for ch in text:
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            counts[name.split(" ")[0] if name else "UNKNOWN"] += 1
    return counts.most_common(1)[0][0] if counts else None
