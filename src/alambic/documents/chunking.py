"""Cut documents into chunks along headings and paragraphs, keeping each chunk's heading path and where in the
document's text it came from."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from alambic.text import SENTENCE_BREAK

HEADING = re.compile(r"^(#{1,6})\s+(.*\S)\s*$")
LINE_BREAK = re.compile(r"\n")
WORD_BREAK = re.compile(r"\s+")
TABLE_RULE = re.compile(r"^\|(\s*:?-+:?\s*\|)+\s*$")


@dataclass(frozen=True)
class Piece:
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Chunk:
    doc: str
    index: int
    text: str
    headings: tuple[str, ...] = ()
    start: int = 0  # character offsets of the chunk's body in the document's (converted) text
    end: int = 0


def _sections(text: str, breaks: frozenset[int]) -> list[tuple[list[str], list[Piece]]]:
    """(heading path, paragraphs) for each section of a markdown or plain-text document; a section also ends at
    each offset in `breaks` (a page break), keeping its heading path."""
    sections: list[tuple[list[str], list[Piece]]] = []
    headings: list[str] = []
    levels: list[int] = []
    paragraphs: list[Piece] = []
    current: list[str] = []
    start = end = position = 0

    def close_paragraph() -> None:
        if current:
            paragraphs.append(Piece("\n".join(current).strip(), start, end))
            current.clear()

    for line in text.splitlines(keepends=True):
        line_start, position = position, position + len(line)
        line = line.rstrip("\r\n")
        if line_start in breaks:
            close_paragraph()
            if paragraphs:
                sections.append((list(headings), list(paragraphs)))
                paragraphs.clear()
        match = HEADING.match(line)
        if match:
            close_paragraph()
            if paragraphs:
                sections.append((list(headings), list(paragraphs)))
                paragraphs.clear()
            level = len(match.group(1))
            while levels and levels[-1] >= level:  # a heading closes those at its level and below
                levels.pop()
                headings.pop()
            levels.append(level)
            headings = [*headings, match.group(2)]
        elif line.strip():
            if not current:
                start = line_start + len(line) - len(line.lstrip())
            current.append(line.rstrip())
            end = line_start + len(line.rstrip())
        else:
            close_paragraph()
    close_paragraph()
    if paragraphs:
        sections.append((list(headings), list(paragraphs)))
    return sections


def _cut(text: str, start: int, end: int, breaks: re.Pattern[str]) -> list[tuple[int, int]]:
    """The spans of text[start:end] between matches of `breaks`."""
    spans, position = [], start
    for match in breaks.finditer(text, start, end):
        if match.start() > position:
            spans.append((position, match.start()))
        position = match.end()
    if position < end:
        spans.append((position, end))
    return spans


def _units(text: str, limit: int, table: bool) -> list[tuple[int, int]]:
    """Spans of at most `limit` characters: sentences (a table's rows); a sentence too long is cut at line breaks,
    then between words, and a word too long for any chunk is cut where the limit falls."""
    units = []
    for start, end in _cut(text, 0, len(text), LINE_BREAK if table else SENTENCE_BREAK):
        lines = [(start, end)] if end - start <= limit else _cut(text, start, end, LINE_BREAK)
        for line_start, line_end in lines:
            fits = line_end - line_start <= limit
            for word_start, word_end in (
                [(line_start, line_end)] if fits else _cut(text, line_start, line_end, WORD_BREAK)
            ):
                units += [(cut, min(cut + limit, word_end)) for cut in range(word_start, word_end, limit)]
    return units


def _split_long(paragraph: Piece, limit: int) -> list[Piece]:
    """A paragraph too long for one chunk, in pieces of whole sentences (or rows, for a table, each piece with the
    table's header) that fit."""
    text = paragraph.text
    if len(text) <= limit:
        return [paragraph]
    header = ""
    lines = text.split("\n")
    table = all(line.startswith("|") for line in lines)
    if table and len(lines) > 2 and TABLE_RULE.match(lines[1]):
        header = "\n".join(lines[:2]) + "\n"
        text = "\n".join(lines[2:])
        paragraph = Piece(text, paragraph.start + len(header), paragraph.end)
        limit = max(limit - len(header), limit // 2)
    pieces: list[Piece] = []
    piece_start = piece_end = None
    for start, end in _units(text, limit, table):
        if piece_start is not None and piece_end is not None and end - piece_start > limit:
            pieces.append(_piece(paragraph, header, piece_start, piece_end))
            piece_start = None
        piece_start = start if piece_start is None else piece_start
        piece_end = end
    if piece_start is not None and piece_end is not None:
        pieces.append(_piece(paragraph, header, piece_start, piece_end))
    return pieces


def _piece(paragraph: Piece, header: str, start: int, end: int) -> Piece:
    return Piece(header + paragraph.text[start:end], paragraph.start + start, paragraph.start + end)


def _chunk(doc: str, index: int, headings: list[str], body: list[Piece]) -> Chunk:
    title = " > ".join(headings)
    joined = "\n\n".join(piece.text for piece in body)
    text = f"{title}\n\n{joined}" if title else joined
    return Chunk(doc, index, text, tuple(headings), body[0].start, body[-1].end)


def chunk_document(doc: str, text: str, max_chars: int, breaks: Iterable[int] = ()) -> list[Chunk]:
    """Chunks of at most about max_chars, never splitting a paragraph unless it alone is too long, and never
    spanning one of the `breaks` (offsets where a page starts).

    Each chunk starts with its heading path, so a chunk read alone still says what it is about.
    """
    chunks: list[Chunk] = []
    for headings, paragraphs in _sections(text, frozenset(breaks)):
        budget = max(max_chars - len(" > ".join(headings)), max_chars // 2)
        body: list[Piece] = []
        for paragraph in (piece for p in paragraphs for piece in _split_long(p, budget)):
            if body and sum(len(piece.text) + 2 for piece in body) + len(paragraph.text) > budget:
                chunks.append(_chunk(doc, len(chunks), headings, body))
                body = []
            body.append(paragraph)
        if body:
            chunks.append(_chunk(doc, len(chunks), headings, body))
    return chunks
