"""Cut documents into chunks along headings and paragraphs, keeping each chunk's heading path and where in the
document's text it came from."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

HEADING = re.compile(r"^(#{1,6})\s+(.*\S)\s*$")
SENTENCE_BREAK = re.compile(r"(?<=[.!?؟。])\s+")


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


def _split_long(paragraph: Piece, limit: int) -> list[Piece]:
    if len(paragraph.text) <= limit:
        return [paragraph]
    text, starts, ends = paragraph.text, [0], []
    for match in SENTENCE_BREAK.finditer(text):
        ends.append(match.start())
        starts.append(match.end())
    ends.append(len(text))
    pieces: list[Piece] = []
    piece, piece_start, piece_end = "", 0, 0
    for start, end in zip(starts, ends, strict=True):
        sentence = text[start:end]
        if piece and len(piece) + 1 + len(sentence) > limit:
            pieces.append(Piece(piece, paragraph.start + piece_start, paragraph.start + piece_end))
            piece, piece_start = sentence, start
        else:
            piece, piece_start = (f"{piece} {sentence}".strip(), piece_start) if piece else (sentence, start)
        piece_end = end
    if piece:
        pieces.append(Piece(piece, paragraph.start + piece_start, paragraph.start + piece_end))
    return pieces


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
