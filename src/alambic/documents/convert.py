"""Each file in docs/ to Markdown by a well-kept converter: pdfminer.six page by page for PDF, Microsoft's
markitdown for Word, PowerPoint, Excel, CSV, HTML and EPUB; text formats are read as they are."""

from __future__ import annotations

import codecs
import csv
import io
import re
import warnings
import zipfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from alambic.documents.chunking import TABLE_RULE
from alambic.documents.model import Converted, PageSpan
from alambic.documents.pdf import convert_pdf
from alambic.documents.pdf import converter_id as pdf_converter_id
from alambic.errors import AlambicError

TEXT_SUFFIXES = {".md", ".markdown", ".txt", ".rst"}
MARKITDOWN_SUFFIXES = {".docx", ".pptx", ".xlsx", ".csv", ".html", ".htm", ".epub"}
SUFFIXES = TEXT_SUFFIXES | MARKITDOWN_SUFFIXES | {".pdf"}
SPREADSHEET_SUFFIXES = {".xlsx", ".csv"}
# What to do with formats people often have that no converter here reads.
RESAVE_AS = {".doc": ".docx", ".ppt": ".pptx", ".xls": ".xlsx", ".odt": ".docx", ".ods": ".xlsx", ".rtf": ".docx"}
EMPTY_CELL = re.compile(r"\| NaN (?=\|)")
EPUB_METADATA = re.compile(r"\A(?:\*\*[A-Z][a-z]+:\*\* .*\n)+")
INLINE_IMAGE = re.compile(r"!\[[^\]]*\]\(data:[^)]*\)")  # pictures pasted into a document carry no text
MAGIC = {
    b"%PDF": "PDF",
    b"PK\x03\x04": "zip (.docx, .xlsx, .pptx or .epub)",
    b"\xd0\xcf\x11\xe0": "Microsoft Office 97",
}
DECLARED_CHARSET = re.compile(rb"""charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
PAGE_FURNITURE = (
    "nav, footer, aside, form, noscript, [role=navigation], [role=banner], [role=contentinfo], "
    "[id*=cookie], [class*=cookie], [id*=consent], [class*=consent]"
)
SLIDE_MARKER = re.compile(r"^<!-- Slide number: (\d+) -->\n?", re.MULTILINE)


def converter_id(suffix: str) -> str:
    """The converter (and its version) a file of this type goes through; recorded with each document."""
    if suffix == ".pdf":
        return pdf_converter_id()
    if suffix in MARKITDOWN_SUFFIXES:
        return f"markitdown {version('markitdown')}"
    return "text"


def convert_file(path: Path) -> Converted:
    """The file's text as Markdown, or a one-line AlambicError naming the file and why it cannot be read."""
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return Converted(_read_text(path), "text")
    if suffix == ".pdf":
        return convert_pdf(path)
    if suffix in MARKITDOWN_SUFFIXES:
        return _convert_with_markitdown(path, suffix)
    advice = f"save it as {RESAVE_AS[suffix]}" if suffix in RESAVE_AS else f"use {', '.join(sorted(SUFFIXES))}"
    raise AlambicError(f"{path}: unsupported document type {path.suffix or '(none)'}; {advice}")


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16").removeprefix("\ufeff")  # Notepad's "Unicode"
    for magic, kind in MAGIC.items():
        if data.startswith(magic):
            raise AlambicError(f"{path}: this is a {kind} file, not text; give it its real extension")
    if b"\x00" in data:
        raise AlambicError(f"{path}: binary file, not a text document")
    return _utf8(path, data)


def _utf8(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise AlambicError(
            f"{path}: not UTF-8 text (byte {exc.start}); re-save it as UTF-8 (in Excel: CSV UTF-8)"
        ) from exc


def _comma_csv(path: Path) -> bytes:
    """The CSV as UTF-8 with commas: Excel in much of Europe writes semicolons (the comma is the decimal mark)."""
    text = _utf8(path, path.read_bytes())
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    except csv.Error:
        return text.encode("utf-8")
    if dialect.delimiter == ",":
        return text.encode("utf-8")
    out = io.StringIO()
    csv.writer(out).writerows(csv.reader(io.StringIO(text), dialect))
    return out.getvalue().encode("utf-8")


def _page_content(path: Path) -> str:
    """An HTML page without what every page of a site repeats (navigation, footer, forms, cookie banners)."""
    from bs4 import BeautifulSoup

    data = path.read_bytes()
    try:
        html = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        declared = DECLARED_CHARSET.search(data[:4096])
        if declared is None:
            raise AlambicError(
                f"{path}: not UTF-8 and no charset declared (byte {exc.start}); re-save it as UTF-8"
            ) from exc
        try:
            html = data.decode(declared.group(1).decode("ascii"), errors="replace")
        except LookupError as unknown:
            raise AlambicError(f"{path}: unknown charset {declared.group(1).decode('ascii', 'replace')}") from unknown
    soup = BeautifulSoup(html, "html.parser")
    for element in soup.select(PAGE_FURNITURE):
        element.decompose()
    return str(soup)


def _markitdown_converter(suffix: str) -> Callable[..., object]:
    from markitdown import converters

    by_suffix = {
        ".docx": converters.DocxConverter,
        ".pptx": converters.PptxConverter,
        ".xlsx": converters.XlsxConverter,
        ".csv": converters.CsvConverter,
        ".epub": converters.EpubConverter,
    }
    return by_suffix[suffix]().convert


def _convert_with_markitdown(path: Path, suffix: str) -> Converted:
    from markitdown import StreamInfo
    from markitdown.converters import HtmlConverter

    if suffix == ".xlsx":
        _check_spreadsheet_values(path)
    try:
        with warnings.catch_warnings():  # BeautifulSoup and pandas warn on stderr; their findings become errors here
            warnings.simplefilter("ignore")
            if suffix in {".html", ".htm"}:
                result = HtmlConverter().convert_string(_page_content(path))
            elif suffix == ".csv":
                result = _markitdown_converter(suffix)(io.BytesIO(_comma_csv(path)), StreamInfo(charset="utf-8"))
            else:
                with path.open("rb") as stream:
                    result = _markitdown_converter(suffix)(stream, StreamInfo(extension=suffix))
    except AlambicError:
        raise
    except (zipfile.BadZipFile, KeyError) as exc:
        raise AlambicError(f"{path}: not a valid {suffix} file (damaged or not really {suffix}: {exc})") from exc
    except Exception as exc:  # markitdown and the libraries under it raise many kinds; all mean "unreadable"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AlambicError(f"{path}: cannot read this {suffix} file ({reason})") from exc
    text = INLINE_IMAGE.sub("", result.markdown).strip()  # type: ignore[attr-defined]
    if suffix in SPREADSHEET_SUFFIXES:
        text = _without_empty_sheets(EMPTY_CELL.sub("| ", text))  # pandas writes a blank cell as NaN
    if suffix == ".epub":
        text = EPUB_METADATA.sub("", text).strip()  # title, language, identifier: a chunk of no use on its own
    if suffix == ".pptx":
        return _with_slides(text, converter_id(suffix))
    return Converted(text, converter_id(suffix))


def _without_empty_sheets(markdown: str) -> str:
    """The sheets of a workbook's Markdown that hold at least one row of data (an empty sheet is a heading and a
    table with no row, or only a header)."""
    sheets = re.split(r"(?m)^(?=## )", markdown)
    return "\n\n".join(sheet.strip() for sheet in sheets if sheet.strip() and _has_data_rows(sheet)).strip()


def _has_data_rows(sheet: str) -> bool:
    rows = [line for line in sheet.splitlines() if line.startswith("|") and not TABLE_RULE.match(line)]
    return len(rows) > 1 and any(any(ch.isalnum() for ch in row) for row in rows[1:])


def _with_slides(text: str, converter: str) -> Converted:
    """markitdown marks each slide with a comment; the marks become page spans and leave the text."""
    parts = SLIDE_MARKER.split(text)
    pieces, spans, offset = [], [], 0
    for number, body in zip(parts[1::2], parts[2::2], strict=True):
        body = body.strip()
        if not body:
            continue
        if pieces:
            offset += 2
        spans.append(PageSpan(int(number), offset, offset + len(body)))
        pieces.append(body)
        offset += len(body)
    return Converted("\n\n".join(pieces), converter, "slide", tuple(spans))


def _check_spreadsheet_values(path: Path) -> None:
    """A workbook whose formulas were never calculated (written by a program, never opened in Excel) has no values
    to read: say so rather than ingest empty cells."""
    import openpyxl

    try:
        with path.open("rb") as stream:
            data = io.BytesIO(stream.read())
        formulas = openpyxl.load_workbook(data, read_only=True, data_only=False)
        values = openpyxl.load_workbook(data, read_only=True, data_only=True)
    except Exception as exc:
        raise AlambicError(f"{path}: not a valid .xlsx file ({type(exc).__name__}: {exc})") from exc
    formula_cells = uncalculated = 0
    for formula_sheet, value_sheet in zip(formulas.worksheets, values.worksheets, strict=True):
        for formula_row, value_row in zip(
            formula_sheet.iter_rows(values_only=True), value_sheet.iter_rows(values_only=True), strict=False
        ):
            for formula, value in zip(formula_row, value_row, strict=False):
                if isinstance(formula, str) and formula.startswith("="):
                    formula_cells += 1
                    uncalculated += value is None
    if formula_cells and uncalculated == formula_cells:
        raise AlambicError(
            f"{path}: {formula_cells} formula cell(s) and none has a saved result; open it in Excel or LibreOffice and "
            "save it, so the results are stored, or export it as .csv"
        )
