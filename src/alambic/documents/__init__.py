"""The business's documents as every stage reads them: each file converted to Markdown by a well-kept converter,
then cut into chunks that remember where they came from (file, page or slide, sheet, heading path, offsets).

Conversions are kept in the project's state folder under the file's hash and the converter's version, so a file
is converted once, and a converter upgrade converts again and re-chunks only the documents whose text changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from alambic.documents.chunking import Chunk, chunk_document
from alambic.documents.convert import SPREADSHEET_SUFFIXES, SUFFIXES, convert_file, converter_id
from alambic.documents.model import Converted, Document, PageSpan, Source
from alambic.errors import AlambicError

SYSTEM_FILES = {"Thumbs.db", "desktop.ini", "Icon\r"}

__all__ = ["SUFFIXES", "Chunk", "Converted", "Document", "PageSpan", "Source", "chunk_document", "read_documents"]


def read_documents(docs_dir: Path, cache_dir: Path | None = None) -> list[Document]:
    """Every document under docs_dir, in a stable order, converted; all or nothing: the first file that cannot be
    read stops it with a one-line error naming the file. A document without text is kept, with a warning."""
    if not docs_dir.is_dir():
        raise AlambicError(f"{docs_dir}: documents folder is missing")
    documents = []
    for path in sorted(docs_dir.rglob("*")):
        relative = path.relative_to(docs_dir)
        if _left_alone(relative):
            continue
        if path.is_symlink():
            _check_link(path)
        if not path.is_file():
            continue
        converted = _converted(path, cache_dir) if path.stat().st_size else Converted("", "-", warnings=("empty file",))
        warnings = converted.warnings or (() if converted.text.strip() else ("no text in it: skipped",))
        documents.append(
            Document(
                path,
                relative.as_posix(),
                converted.text if converted.text.strip() else "",
                converted.converter,
                converted.unit,
                converted.pages,
                warnings,
                path.suffix.lower() in SPREADSHEET_SUFFIXES,
            )
        )
    if not any(document.text for document in documents):
        raise AlambicError(f"{docs_dir}: no documents (add .md, .txt, .pdf, .docx, .xlsx or .html files)")
    return documents


def _left_alone(relative: Path) -> bool:
    """Hidden files and folders, and what operating systems and Office leave beside documents."""
    return any(part.startswith(".") for part in relative.parts) or (
        relative.name in SYSTEM_FILES or relative.name.startswith("~$")
    )


def _check_link(path: Path) -> None:
    try:
        path.resolve(strict=True)
    except FileNotFoundError as exc:
        raise AlambicError(f"{path}: broken link to {path.readlink()} (the file it points to is missing)") from exc
    except (RuntimeError, OSError) as exc:  # Python raises RuntimeError for a loop of links
        raise AlambicError(f"{path}: a loop of links ({path} -> {path.readlink()} -> ...)") from exc


def _converted(path: Path, cache_dir: Path | None) -> Converted:
    suffix = path.suffix.lower()
    if cache_dir is None or suffix not in SUFFIXES or converter_id(suffix) == "text":
        return convert_file(path)
    with path.open("rb") as stream:
        digest = hashlib.file_digest(stream, "sha256").hexdigest()
    cached = cache_dir / f"{digest}-{converter_id(suffix).replace(' ', '-')}.json"
    if cached.is_file():
        stored = json.loads(cached.read_text(encoding="utf-8"))
        return Converted(
            stored["text"],
            stored["converter"],
            stored["unit"],
            tuple(PageSpan(**page) for page in stored["pages"]),
            tuple(stored["warnings"]),
        )
    converted = convert_file(path)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")  # processes converting at once don't clash
    partial.write_text(json.dumps(asdict(converted), ensure_ascii=False), encoding="utf-8")
    partial.replace(cached)
    return converted
