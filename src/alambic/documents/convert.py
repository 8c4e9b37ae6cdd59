"""Each file in docs/ to Markdown by a well-kept converter: pdfminer.six page by page for PDF, Microsoft's
markitdown for Word, PowerPoint, Excel, CSV, HTML and EPUB; text formats are read as they are."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

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
    if b"\x00" in data:
        raise AlambicError(f"{path}: binary file, not a text document")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise AlambicError(f"{path}: not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from exc


def _markitdown_converter(suffix: str) -> Callable[..., object]:
    from markitdown import converters

    by_suffix = {
        ".docx": converters.DocxConverter,
        ".pptx": converters.PptxConverter,
        ".xlsx": converters.XlsxConverter,
        ".csv": converters.CsvConverter,
        ".html": converters.HtmlConverter,
        ".htm": converters.HtmlConverter,
        ".epub": converters.EpubConverter,
    }
    return by_suffix[suffix]().convert


def _convert_with_markitdown(path: Path, suffix: str) -> Converted:
    from markitdown import StreamInfo

    if suffix == ".xlsx":
        _check_spreadsheet_values(path)
    charset = "utf-8" if suffix in {".csv", ".html", ".htm"} else None
    try:
        with path.open("rb") as stream:
            result = _markitdown_converter(suffix)(stream, StreamInfo(extension=suffix, charset=charset))
    except (zipfile.BadZipFile, KeyError) as exc:
        raise AlambicError(f"{path}: not a valid {suffix} file (damaged or not really {suffix}: {exc})") from exc
    except Exception as exc:  # markitdown and the libraries under it raise many kinds; all mean "unreadable"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AlambicError(f"{path}: cannot read this {suffix} file ({reason})") from exc
    text = result.markdown.strip()  # type: ignore[attr-defined]
    if suffix in SPREADSHEET_SUFFIXES:
        text = EMPTY_CELL.sub("| ", text)  # pandas writes a blank cell as NaN
    if suffix == ".pptx":
        return _with_slides(text, converter_id(suffix))
    return Converted(text, converter_id(suffix))


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
            f"{path}: its {formula_cells} formulas have no saved results; open it in Excel or LibreOffice and "
            "save it, so the results are stored, or export it as .csv"
        )
