"""Cut documents into chunks along headings and paragraphs, keeping each chunk's heading path."""

from __future__ import annotations

import re
from dataclasses import dataclass

HEADING = re.compile(r"^(#{1,6})\s+(.*\S)\s*$")


@dataclass(frozen=True)
class Chunk:
    doc: str
    index: int
    text: str


def _sections(text: str) -> list[tuple[list[str], list[str]]]:
    """(heading path, paragraphs) for each section of a markdown or plain-text document."""
    sections: list[tuple[list[str], list[str]]] = []
    headings: list[str] = []
    paragraphs: list[str] = []
    current: list[str] = []

    def close_paragraph() -> None:
        if current:
            paragraphs.append("\n".join(current).strip())
            current.clear()

    for line in text.splitlines():
        match = HEADING.match(line)
        if match:
            close_paragraph()
            if paragraphs:
                sections.append((list(headings), list(paragraphs)))
                paragraphs.clear()
            level = len(match.group(1))
            headings = [*headings[: level - 1], match.group(2)]
        elif line.strip():
            current.append(line.rstrip())
        else:
            close_paragraph()
    close_paragraph()
    if paragraphs:
        sections.append((list(headings), list(paragraphs)))
    return sections


def _split_long(paragraph: str, limit: int) -> list[str]:
    if len(paragraph) <= limit:
        return [paragraph]
    sentences = re.split(r"(?<=[.!?؟。])\s+", paragraph)
    pieces, piece = [], ""
    for sentence in sentences:
        if piece and len(piece) + 1 + len(sentence) > limit:
            pieces.append(piece)
            piece = sentence
        else:
            piece = f"{piece} {sentence}".strip()
    if piece:
        pieces.append(piece)
    return pieces


def chunk_document(doc: str, text: str, max_chars: int) -> list[Chunk]:
    """Chunks of at most about max_chars, never splitting a paragraph unless it alone is too long.

    Each chunk starts with its heading path, so a chunk read alone still says what it is about.
    """
    chunks: list[Chunk] = []
    for headings, paragraphs in _sections(text):
        title = " > ".join(headings)
        budget = max(max_chars - len(title), max_chars // 2)
        body = ""
        for paragraph in (piece for p in paragraphs for piece in _split_long(p, budget)):
            if body and len(body) + 2 + len(paragraph) > budget:
                chunks.append(Chunk(doc, len(chunks), _with_title(title, body)))
                body = paragraph
            else:
                body = f"{body}\n\n{paragraph}" if body else paragraph
        if body:
            chunks.append(Chunk(doc, len(chunks), _with_title(title, body)))
    return chunks


def _with_title(title: str, body: str) -> str:
    return f"{title}\n\n{body}" if title else body
