"""The support-desk example's PDF and spreadsheet are what examples/make_documents.py writes, and read back right."""

import importlib.util
import re
from pathlib import Path

from alambic.documents import convert_file

from ..conftest import EXAMPLE

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "make_documents.py"


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def test_example_documents_are_made_by_the_script(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_documents", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(tmp_path)
    for name in ("warranty-terms.pdf", "price-list.xlsx", "arabic-customers.pdf"):
        assert convert_file(tmp_path / name).text == convert_file(EXAMPLE / "docs" / name).text, name


def test_arabic_pdf_twin_reads_like_its_source() -> None:
    """Every paragraph of the Arabic page comes out of its PDF twin word for word, in reading order."""
    source = (EXAMPLE / "docs" / "arabic-customers.md").read_text(encoding="utf-8")
    converted = convert_file(EXAMPLE / "docs" / "arabic-customers.pdf")
    extracted = " ".join(words(converted.text))
    paragraphs = [line for line in source.splitlines() if line.strip() and not line.startswith("#")]
    assert len(paragraphs) >= 10
    for paragraph in paragraphs:
        assert " ".join(words(paragraph)) in extracted
    assert set(words(converted.text)) <= set(words(source))


def test_warranty_pdf_cites_its_pages() -> None:
    converted = convert_file(EXAMPLE / "docs" / "warranty-terms.pdf")
    assert [page.number for page in converted.pages] == [1, 2, 3]
    second = converted.text[converted.pages[1].start : converted.pages[1].end]
    assert "Burrs are wear parts" in second and "# Warranty periods" in second
