"""PDF to text with pdfminer.six (the library markitdown itself uses for PDFs), page by page: each page's text
keeps its page number, right-to-left pages are put back in reading order, and memory stays flat however long the
file is."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from itertools import groupby
from pathlib import Path
from typing import Any

from alambic.documents.model import Converted, PageSpan
from alambic.documents.rtl import MAX_SINGLE_LETTER_SHARE, is_rtl, reading_order
from alambic.errors import AlambicError

OCR_HINT = "OCR is not part of alambic: run `ocrmypdf FILE.pdf FILE-ocr.pdf` and put the result in docs/"


def converter_id() -> str:
    return f"pdfminer.six {version('pdfminer.six')}"


@dataclass
class _Line:
    """A line of text as its glyphs' strings, and how its type looks."""

    glyphs: list[str]
    size: float
    bold: bool
    chars: int
    text: str = ""


@dataclass
class _Box:
    """A text box of a page (pdfminer's paragraph) and where it sits."""

    lines: list[_Line]
    top: float


def _line(layout_line: Any) -> _Line | None:
    from pdfminer.layout import LTChar

    chars = [glyph for glyph in layout_line if isinstance(glyph, LTChar) and not glyph.get_text().isspace()]
    if not chars:
        return None
    glyphs = [glyph.get_text() for glyph in layout_line if glyph.get_text() != "\n"]
    bold = all("bold" in glyph.fontname.lower() for glyph in chars)
    return _Line(glyphs, statistics.median(glyph.size for glyph in chars), bold, len(chars))


def _boxes(layout: Any) -> tuple[list[_Box], int]:
    """The page's text boxes, in pdfminer's reading order, and how many images it holds."""
    from pdfminer.layout import LTImage, LTTextBox, LTTextLine

    boxes, images = [], 0
    for item in _walk(layout):
        if isinstance(item, LTTextBox):
            lines = [line for child in item if isinstance(child, LTTextLine) and (line := _line(child))]
            if lines:
                boxes.append(_Box(lines, item.y1))
        elif isinstance(item, LTImage):
            images += 1
    return boxes, images


def _walk(layout: Any) -> Iterator[Any]:
    from pdfminer.layout import LTFigure

    for item in layout:
        yield item
        if isinstance(item, LTFigure):
            yield from _walk(item)


def _body_size(boxes: list[_Box]) -> float | None:
    """The type size most of the page's regular (not bold) text is set in."""
    sizes = [line.size for box in boxes for line in box.lines if not line.bold for _ in range(line.chars)]
    return statistics.median(sizes) if sizes else None


def _page_markdown(boxes: list[_Box], body: float) -> str:
    """Boxes as Markdown paragraphs. One or two lines in bold or in larger type than the body are a heading."""
    out = []
    for box in boxes:
        for looks_like_heading, group in groupby(box.lines, lambda line: line.bold or line.size >= 1.15 * body):
            lines = [line for line in group if line.text.strip()]
            if not lines:
                continue
            if looks_like_heading and len(lines) <= 2:
                level = 1 if max(line.size for line in lines) >= 1.4 * body else 2
                out.append(f"{'#' * level} {' '.join(' '.join(line.text for line in lines).split())}")
            else:
                out.append("\n".join(line.text.strip() for line in lines))
    return "\n\n".join(out)


def _pages(path: Path) -> Iterator[tuple[int, list[_Box], int]]:
    """(page number, text boxes, images) for each page, read one page at a time."""
    from pdfminer.converter import PDFPageAggregator
    from pdfminer.layout import LAParams
    from pdfminer.pdfdocument import PDFDocument, PDFEncryptionError, PDFPasswordIncorrect
    from pdfminer.pdfexceptions import PDFException
    from pdfminer.pdfinterp import PDFPageInterpreter, PDFResourceManager
    from pdfminer.pdfpage import PDFPage
    from pdfminer.pdfparser import PDFParser
    from pdfminer.psexceptions import PSException

    with path.open("rb") as stream:
        try:
            document = PDFDocument(PDFParser(stream), caching=False)  # objects are not kept: memory stays flat
            resources = PDFResourceManager(caching=True)
            device = PDFPageAggregator(resources, laparams=LAParams())
            interpreter = PDFPageInterpreter(resources, device)
            for number, page in enumerate(PDFPage.create_pages(document), 1):
                interpreter.process_page(page)
                yield (number, *_boxes(device.get_result()))
        except PDFPasswordIncorrect as exc:
            raise AlambicError(f"{path}: encrypted PDF that needs a password; save a copy without one") from exc
        except PDFEncryptionError as exc:
            raise AlambicError(f"{path}: encrypted PDF that cannot be read ({exc})") from exc
        except (PDFException, PSException, ValueError, KeyError, TypeError) as exc:
            raise AlambicError(f"{path}: not a readable PDF ({type(exc).__name__}: {exc})") from exc


class _Pages:
    """The converted pages joined into one text, with each page's span in it."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.spans: list[PageSpan] = []
        self.offset = 0

    def add(self, number: int, text: str) -> None:
        if self.texts:
            self.offset += 2
        self.spans.append(PageSpan(number, self.offset, self.offset + len(text)))
        self.texts.append(text)
        self.offset += len(text)


def _ordered_boxes(path: Path, number: int, boxes: list[_Box]) -> bool:
    """Put the page's right-to-left lines in reading order (and its boxes, if the page is right-to-left); whether
    any line had to be reversed."""
    lines = [line for box in boxes for line in box.lines]
    ordering = reading_order([line.glyphs for line in lines])
    if ordering.detached_share > MAX_SINGLE_LETTER_SHARE:
        raise AlambicError(
            f"{path}: page {number}: its right-to-left text comes out as detached letters "
            f"({ordering.detached_share:.0%} of its words are one letter); export the PDF again with a "
            "text layer (e.g. from Word or LibreOffice), or put the .docx or a .txt in docs/"
        )
    for line, text in zip(lines, ordering.lines, strict=True):
        line.text = text
    if is_rtl("".join(ordering.lines)):
        # pdfminer orders boxes for left-to-right columns; a right-aligned heading would land after its text
        boxes.sort(key=lambda box: -box.top)
    return ordering.reversed_lines > 0


def convert_pdf(path: Path) -> Converted:
    pages = _Pages()
    blank: list[int] = []
    reordered: list[int] = []
    # Pages of headings alone (a cover) wait for the first page with body text, whose type size sets the levels.
    waiting: list[tuple[int, list[_Box]]] = []
    body = 0.0
    for number, boxes, images in _pages(path):
        if _ordered_boxes(path, number, boxes):
            reordered.append(number)
        if not boxes and images:
            blank.append(number)
        waiting.append((number, boxes))
        body = body or _body_size(boxes) or 0.0
        if body:
            for waiting_number, waiting_boxes in waiting:
                if text := _page_markdown(waiting_boxes, body):
                    pages.add(waiting_number, text)
            waiting.clear()
    fallback = min((line.size for _, boxes in waiting for box in boxes for line in box.lines), default=0.0) / 1.15
    for number, boxes in waiting:
        if text := _page_markdown(boxes, fallback):
            pages.add(number, text)
    if not pages.texts:
        if blank:
            raise AlambicError(f"{path}: no text layer (a scanned PDF?); {OCR_HINT}")
        raise AlambicError(f"{path}: the PDF has no text")
    warnings = []
    if blank:
        warnings.append(f"no text on page(s) {_numbers(blank)}, only images (scanned?); {OCR_HINT}")
    if reordered:
        warnings.append(f"right-to-left text put back in reading order on page(s) {_numbers(reordered)}")
    return Converted("\n\n".join(pages.texts), converter_id(), "page", tuple(pages.spans), tuple(warnings))


def _numbers(pages: list[int]) -> str:
    shown = ", ".join(map(str, pages[:10]))
    return shown + (f" and {len(pages) - 10} more" if len(pages) > 10 else "")
