"""`alambic docs` lists what was ingested: files, converter, pages or sheets, chunks, warnings."""

import json
from pathlib import Path

from ..conftest import EXAMPLE, run_cli, write_project


def test_docs_lists_every_document_with_its_converter_and_pages(tmp_path: Path) -> None:
    root = write_project(tmp_path / "shop", (EXAMPLE / "alambic.toml").read_text(encoding="utf-8"), suffixes=None)
    rows = {row["file"]: row for row in json.loads(run_cli("docs", "--json", "--project", root).stdout)}
    assert set(rows) == {path.name for path in (EXAMPLE / "docs").iterdir()}
    assert rows["warranty-terms.pdf"]["converter"].startswith("pdfminer.six ")
    assert (rows["warranty-terms.pdf"]["pages"], rows["warranty-terms.pdf"]["unit"]) == (3, "page")
    assert rows["price-list.xlsx"]["sheets"] == ["Coffee", "Equipment"]
    assert "reading order" in rows["arabic-customers.pdf"]["warnings"][0]
    assert rows["faq.md"]["converter"] == "text" and rows["faq.md"]["chunks"] > 1
    assert not any(row["ingested"] for row in rows.values())
    assert len(list((root / ".alambic" / "converted").iterdir())) == 3  # each converted file is kept
    table = run_cli("docs", "--project", root).stdout
    assert "warranty-terms.pdf" in table and "3 pages" in table and "2 sheets" in table
