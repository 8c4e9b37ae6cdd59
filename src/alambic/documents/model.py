"""What ingestion hands on: a document's Markdown text with its pages, and where in it each chunk came from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from alambic.documents.chunking import Chunk, chunk_document
from alambic.hashing import stable_hash


@dataclass(frozen=True)
class PageSpan:
    """The characters [start, end) of a converted text that came from page (or slide) `number`."""

    number: int
    start: int
    end: int


@dataclass(frozen=True)
class Converted:
    text: str
    converter: str  # the library and version that made the text, e.g. "pdfminer.six 20260107"
    unit: str | None = None  # "page" (PDF) or "slide" (PPTX): what `pages` count
    pages: tuple[PageSpan, ...] = ()
    warnings: tuple[str, ...] = ()


class Source(BaseModel):
    """Where a chunk came from, as a citation can name it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str
    unit: str | None = None
    pages: tuple[int, ...] = ()  # first and last page (or slide) the chunk spans; empty without pages
    sheet: str | None = None
    headings: tuple[str, ...] = ()
    start: int
    end: int

    @property
    def citation(self) -> str:
        """e.g. "warranty.pdf, page 4", "price-list.xlsx, sheet Coffee", "faq.md › Returns"."""
        if self.pages:
            first, last = self.pages[0], self.pages[-1]
            where = f"{self.unit} {first}" if first == last else f"{self.unit}s {first}–{last}"
            return f"{self.file}, {where}"
        if self.sheet:
            return f"{self.file}, sheet {self.sheet}"
        return " › ".join((self.file, *self.headings))


@dataclass(frozen=True)
class Document:
    path: Path
    relpath: str
    text: str
    converter: str = "text"
    unit: str | None = None
    pages: tuple[PageSpan, ...] = ()
    warnings: tuple[str, ...] = ()
    spreadsheet: bool = False

    @property
    def key(self) -> str:
        """The document's ledger key: a new text (edited, or converted differently) is a new document."""
        return stable_hash("document", self.relpath, self.text)

    def chunks(self, max_chars: int) -> list[Chunk]:
        """The document's chunks; with pages, none spans a page break, so each cites its page."""
        return chunk_document(self.relpath, self.text, max_chars, [page.start for page in self.pages[1:]])

    def source(self, chunk: Chunk) -> Source:
        pages = [page.number for page in self.pages if page.start < chunk.end and chunk.start < page.end]
        sheet = chunk.headings[0] if self.spreadsheet and chunk.headings else None
        return Source(
            file=self.relpath,
            unit=self.unit if pages else None,
            pages=(pages[0], pages[-1]) if pages else (),
            sheet=sheet,
            headings=chunk.headings,
            start=chunk.start,
            end=chunk.end,
        )
