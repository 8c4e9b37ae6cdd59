"""Right-to-left text that a PDF gave back in visual order, put back in reading order.

PDF files lay out Arabic (and Hebrew, Persian, Urdu) glyphs as they are seen, right to left, so text extraction
often returns each line reversed, and with presentation forms instead of letters. Whether a page reads forward or
backward is decided by the language model in `alambic.language`: the page's right-to-left lines are scored as
written and reversed, and the likelier direction wins. Letters that come out separated by spaces cannot be put
back together; such a page is reported, not guessed at.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from alambic.language import language_of, log_likelihood

RTL_CLASSES = {"R", "AL"}
LTR_CLASSES = {"L", "EN", "AN"}
# Characters that may sit inside a left-to-right run ("Model X-200", "£9.50", "14:00") without ending it.
RUN_JOINERS = set(" .,:/%+-_@£$€#'")
MIRRORED = str.maketrans("()[]{}", ")(][}{")
SPACE_BEFORE_MARK = re.compile(r"\s+(?=[\u0300-\u036f\u064b-\u065f\u0670\u06d6-\u06ed])")
# Real Arabic has few one-letter words (و and ب are written joined to the next word): over this share of words
# being single letters, the letters came out detached.
MAX_SINGLE_LETTER_SHARE = 0.3
MIN_WORDS_TO_JUDGE = 12


@dataclass(frozen=True)
class Ordering:
    lines: list[str]
    reversed_lines: int  # lines put back in reading order
    detached_share: float  # share of right-to-left words that are a single letter


def is_rtl(text: str) -> bool:
    """Whether most of the text's letters are written right to left."""
    classes = [unicodedata.bidirectional(ch) for ch in text if ch.isalpha()]
    return bool(classes) and sum(c in RTL_CLASSES for c in classes) * 2 > len(classes)


def letters_from_presentation_forms(text: str) -> str:
    """Arabic presentation forms (the shaped glyphs a PDF font maps to) folded back to plain letters."""
    return "".join(unicodedata.normalize("NFKC", ch) if _is_presentation_form(ch) else ch for ch in text)


def _is_presentation_form(ch: str) -> bool:
    return "\ufb50" <= ch <= "\ufdff" or "\ufe70" <= ch <= "\ufeff"


def _joined(glyphs: list[str]) -> str:
    """A line's glyphs as text, without the spaces extraction puts before a detached diacritic."""
    return SPACE_BEFORE_MARK.sub("", letters_from_presentation_forms("".join(glyphs)))


def reversed_line(glyphs: list[str]) -> str:
    """A visual-order line in reading order. The glyphs are reversed, but not the letters inside one glyph (a
    lam-alef ligature stays lam then alef); left-to-right runs (Latin words, numbers) are turned back, and
    brackets are mirrored if reversing left them closing before opening."""
    units = list(reversed(glyphs))
    out: list[str] = []
    index = 0
    while index < len(units):
        if not _is_ltr(units[index]):
            out.append(units[index])
            index += 1
            continue
        end = last_ltr = index
        has_letters = False
        while end < len(units):
            if _is_ltr(units[end]):
                last_ltr = end
                has_letters = has_letters or units[end].isalpha()
            elif units[end] not in RUN_JOINERS or (units[end].isspace() and not has_letters):
                break  # numbers alone do not join across spaces: "0142 555 0131" reads number by number
            end += 1
        out.extend(reversed(units[index : last_ltr + 1]))
        index = last_ltr + 1
    line = _joined(out)
    return line.translate(MIRRORED) if _closes_first(line) else line


def _is_ltr(glyph: str) -> bool:
    return bool(glyph) and unicodedata.bidirectional(glyph[0]) in LTR_CLASSES


def _closes_first(line: str) -> bool:
    for ch in line:
        if ch in "([{":
            return False
        if ch in ")]}":
            return True
    return False


def _detached_share(lines: list[str]) -> float:
    words = [word for line in lines for word in line.split() if any(ch.isalpha() for ch in word)]
    if len(words) < MIN_WORDS_TO_JUDGE:
        return 0.0
    return sum(sum(ch.isalpha() for ch in word) == 1 for word in words) / len(words)


def reading_order(lines: list[list[str]]) -> Ordering:
    """A page's lines, each given as its glyphs' text, with the right-to-left ones in reading order if they came
    out in visual order."""
    text = [_joined(glyphs) for glyphs in lines]
    rtl = [i for i, line in enumerate(text) if is_rtl(line)]
    language = language_of(" ".join(text[i] for i in rtl)) if rtl else None
    reversed_count = 0
    if language is not None:
        backward = {i: reversed_line(lines[i]) for i in rtl}
        forward_score = sum(log_likelihood(text[i], language) for i in rtl)
        if sum(log_likelihood(line, language) for line in backward.values()) > forward_score:
            for i, line in backward.items():
                text[i] = line
            reversed_count = len(rtl)
    return Ordering(text, reversed_count, _detached_share([text[i] for i in rtl]))
