"""Each format converts to Markdown whose chunks keep the content and say where it came from."""

import re
from pathlib import Path

import pytest

from alambic.documents import Document, read_documents
from alambic.documents.rtl import reversed_line
from alambic.errors import AlambicError

from . import files


def read_one(folder: Path) -> Document:
    (document,) = read_documents(folder)
    return document


def citations(document: Document, max_chars: int = 900) -> list[tuple[str, str]]:
    return [(chunk.text, document.source(chunk).citation) for chunk in document.chunks(max_chars)]


def test_pdf_pages_are_cited_and_no_chunk_spans_a_page_break(tmp_path: Path) -> None:
    pages = [[f"Page {n} says the grinder number {n} costs {100 + n} pounds."] for n in range(1, 6)]
    files.pdf(tmp_path / "prices.pdf", pages)
    document = read_one(tmp_path)
    assert document.converter.startswith("pdfminer.six ")
    assert [page.number for page in document.pages] == [1, 2, 3, 4, 5]
    cited = citations(document, max_chars=2000)
    assert len(cited) == 5
    for n, (text, citation) in enumerate(cited, 1):
        assert f"grinder number {n} costs {100 + n} pounds" in text
        assert citation == f"prices.pdf, page {n}"
        assert document.text[document.pages[n - 1].start : document.pages[n - 1].end].startswith(f"Page {n} says")


def test_pdf_bold_and_large_lines_become_headings(tmp_path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_font("dejavu", fname=str(files.FONT))
    pdf.add_page()
    pdf.set_font("dejavu", size=20)
    pdf.multi_cell(0, 10, "Warranty terms", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("dejavu", size=11)
    pdf.multi_cell(0, 5, "The grinder has a two-year warranty against manufacturing faults. " * 3)
    pdf.output(str(tmp_path / "warranty.pdf"))
    document = read_one(tmp_path)
    assert document.text.startswith("# Warranty terms\n\nThe grinder has a two-year warranty")
    (chunk,) = document.chunks(900)
    assert chunk.headings == ("Warranty terms",)
    assert document.source(chunk).citation == "warranty.pdf, page 1"


def test_docx_headings_become_the_heading_path(tmp_path: Path) -> None:
    files.docx(tmp_path / "returns.docx")
    document = read_one(tmp_path)
    assert document.converter.startswith("markitdown ")
    cited = citations(document)
    assert ("Returns policy › Faulty equipment" in cited[-1][1]) and cited[-1][1].startswith("returns.docx")
    assert "two-year warranty" in cited[-1][0]
    assert "يمكن إرجاع القهوة غير المفتوحة خلال 30 يوماً" in document.text


def test_pptx_slides_are_cited(tmp_path: Path) -> None:
    files.pptx(tmp_path / "deck.pptx")
    document = read_one(tmp_path)
    assert document.unit == "slide"
    assert "<!--" not in document.text
    cited = citations(document, max_chars=60)
    assert [citation for _, citation in cited] == ["deck.pptx, slide 1", "deck.pptx, slide 2"]
    assert "Tuesdays and Thursdays" in cited[0][0] and "20% off" in cited[1][0]


def test_xlsx_sheets_are_cited(tmp_path: Path) -> None:
    files.xlsx(tmp_path / "prices.xlsx")
    document = read_one(tmp_path)
    cited = dict((citation, text) for text, citation in citations(document, max_chars=120))
    assert set(cited) == {"prices.xlsx, sheet Coffee", "prices.xlsx, sheet Equipment"}
    assert "| Mocha Haraaz | 18" in cited["prices.xlsx, sheet Coffee"]
    assert "| Comandante C40 hand grinder | 235 |" in cited["prices.xlsx, sheet Equipment"]


def test_empty_sheets_are_left_out(tmp_path: Path) -> None:
    import openpyxl

    workbook = openpyxl.Workbook()
    workbook.active.title = "Prices"
    workbook.active.append(["Item", "Price (£)"])
    workbook.active.append(["Fellow Stagg EKG kettle", 165])
    workbook.create_sheet("Empty")
    workbook.create_sheet("Header only").append(["Item", "Price (£)"])
    workbook.save(tmp_path / "prices.xlsx")
    document = read_one(tmp_path)
    assert document.text == "## Prices\n| Item | Price (£) |\n| --- | --- |\n| Fellow Stagg EKG kettle | 165 |"


def test_csv_html_and_epub(tmp_path: Path) -> None:
    (tmp_path / "stock.csv").write_text("item,price\nAeroPress,39\nدلة,58\n", encoding="utf-8")
    (tmp_path / "about.html").write_text(
        "<html><body><h1>About us</h1><h2>Roasting</h2><p>We roast on <b>Tuesdays</b>.</p>"
        "<script>track()</script></body></html>",
        encoding="utf-8",
    )
    files.epub(tmp_path / "guide.epub")
    documents = {document.relpath: document for document in read_documents(tmp_path)}
    assert "| دلة | 58 |" in documents["stock.csv"].text
    about = citations(documents["about.html"])
    assert about == [("About us > Roasting\n\nWe roast on **Tuesdays**.", "about.html › About us › Roasting")]
    assert "**Title:**" not in documents["guide.epub"].text  # the metadata block is not a chunk of its own
    guide = citations(documents["guide.epub"])
    assert any("15 g of coffee for 250 g of water" in text for text, _ in guide)
    assert any(citation == "guide.epub › Brewing guide" for _, citation in guide)


def test_chunk_offsets_point_at_the_chunk_body(tmp_path: Path) -> None:
    files.docx(tmp_path / "returns.docx")
    document = read_one(tmp_path)
    for chunk in document.chunks(60):
        body = chunk.text.split("\n\n", 1)[1] if chunk.headings else chunk.text
        assert document.text[chunk.start : chunk.end] == body


def test_shaped_arabic_pdf_comes_back_in_reading_order(tmp_path: Path) -> None:
    """A word processor lays Arabic out right to left, so the text layer is in visual order: each line comes out
    reversed. It is detected and put back; every word then is one the page was written with."""
    files.pdf(tmp_path / "warranty-ar.pdf", [files.ARABIC[:2], files.ARABIC[2:]], shaped_rtl=True)
    document = read_one(tmp_path)
    assert "reading order on page(s) 1, 2" in document.warnings[0]
    written = {word for paragraph in files.ARABIC for word in paragraph.replace("،", " ").split()}
    extracted = document.text.replace("،", " ").split()
    assert len(extracted) >= 40
    assert set(extracted) <= written
    for paragraph in files.ARABIC:
        assert " ".join(paragraph.split()) in " ".join(document.text.split())
    assert [document.source(chunk).citation for chunk in document.chunks(900)] == [
        "warranty-ar.pdf, page 1",
        "warranty-ar.pdf, page 2",
    ]


def test_arabic_pdf_already_in_reading_order_is_left_alone(tmp_path: Path) -> None:
    files.pdf(tmp_path / "plain-ar.pdf", [files.ARABIC])
    document = read_one(tmp_path)
    assert document.warnings == ()
    for paragraph in files.ARABIC:
        assert " ".join(paragraph.split()) in " ".join(document.text.split())


def test_arabic_pdf_with_detached_letters_is_rejected(tmp_path: Path) -> None:
    detached = [" ".join(paragraph.replace(" ", "")) for paragraph in files.ARABIC]
    files.pdf(tmp_path / "detached.pdf", [detached])
    with pytest.raises(AlambicError, match=r"detached\.pdf: page 1: .*detached letters"):
        read_documents(tmp_path)


def test_visual_line_keeps_latin_runs_numbers_and_ligatures() -> None:
    glyphs = list("0131 555 0142 مقرلا ىلع وأ hello@qahwalane.example ىلع انلسار")
    assert reversed_line(glyphs) == "راسلنا على hello@qahwalane.example أو على الرقم 0142 555 0131"
    assert reversed_line(["ة", "د", "م", "لا"]) == "لامدة"  # a lam-alef glyph keeps its letters' order
    visual = ["(", "ا", "م", "و", "ي", " ", "1", "4", ")", " ", "ل", "لا", "خ"]
    assert reversed_line(visual) == "خلال (14 يوما)"  # brackets drawn mirrored are put back
    assert reversed_line([{"(": ")", ")": "("}.get(g, g) for g in visual]) == "خلال (14 يوما)"


@pytest.mark.parametrize("case", list(files.UNREADABLE))
def test_unreadable_documents_name_the_file_and_the_reason(tmp_path: Path, case: str) -> None:
    make, message = files.UNREADABLE[case]
    folder = tmp_path / "docs"
    folder.mkdir()
    files.docx(folder / "a-good-one.docx")
    make(folder)
    with pytest.raises(AlambicError, match=re.escape(message)) as raised:
        read_documents(folder)
    assert "\n" not in str(raised.value)


def test_a_converter_upgrade_converts_again_but_keeps_unchanged_documents(tmp_path: Path, monkeypatch) -> None:
    import alambic.documents as documents

    docs, cache = tmp_path / "docs", tmp_path / "converted"
    docs.mkdir()
    files.docx(docs / "returns.docx")
    files.pdf(docs / "prices.pdf", [["The AeroPress costs 39 pounds."]])
    before = {d.relpath: d.key for d in read_documents(docs, cache)}
    assert len(list(cache.iterdir())) == 2
    assert {d.relpath: d.key for d in read_documents(docs, cache)} == before  # from the kept conversions
    upgraded = documents.converter_id
    monkeypatch.setattr(documents, "converter_id", lambda suffix: upgraded(suffix) + ".post1")
    files.pdf(docs / "prices.pdf", [["The AeroPress costs 42 pounds."]])
    after = {d.relpath: d.key for d in read_documents(docs, cache)}
    assert len(list(cache.iterdir())) == 4
    assert after["returns.docx"] == before["returns.docx"]
    assert after["prices.pdf"] != before["prices.pdf"]


def test_european_csv_with_semicolons_becomes_a_table(tmp_path: Path) -> None:
    (tmp_path / "prices.csv").write_text("Coffee;Price (£);Notes\nHarbour Blend;9,50;dark, chocolate\n", "utf-8")
    assert "| Harbour Blend | 9,50 | dark, chocolate |" in read_one(tmp_path).text


def test_text_encodings_people_save_in(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("Café crème, très chaud.", encoding="utf-16")
    assert read_one(tmp_path).text == "Café crème, très chaud."
    (tmp_path / "notes.txt").unlink()
    (tmp_path / "prices.csv").write_bytes("Coffee,Price\nCafé,€9\n".encode("cp1252"))
    with pytest.raises(AlambicError, match=r"prices\.csv: not UTF-8 .*CSV UTF-8"):
        read_documents(tmp_path)
    (tmp_path / "prices.csv").unlink()
    files.pdf(tmp_path / "manual.txt", [["A PDF with the wrong name."]])
    with pytest.raises(AlambicError, match=r"manual\.txt: this is a PDF file, not text"):
        read_documents(tmp_path)


def test_system_files_hidden_folders_and_office_locks_are_left_alone(tmp_path: Path) -> None:
    files.docx(tmp_path / "returns.docx")
    (tmp_path / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (tmp_path / "desktop.ini").write_text("[.ShellClassInfo]", encoding="utf-8")
    (tmp_path / "~$returns.docx").write_bytes(b"lock")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main", encoding="utf-8")
    assert [document.relpath for document in read_documents(tmp_path)] == ["returns.docx"]


def test_documents_without_text_are_listed_with_a_warning_not_an_error(tmp_path: Path) -> None:
    import docx as python_docx

    files.docx(tmp_path / "returns.docx")
    python_docx.Document().save(str(tmp_path / "blank-template.docx"))
    (tmp_path / "empty.pdf").write_bytes(b"")
    documents = {document.relpath: document for document in read_documents(tmp_path)}
    assert documents["blank-template.docx"].text == "" and documents["blank-template.docx"].chunks(900) == []
    assert documents["blank-template.docx"].warnings == ("no text in it: skipped",)
    assert documents["empty.pdf"].warnings == ("empty file",)
    (tmp_path / "returns.docx").unlink()
    with pytest.raises(AlambicError, match="no documents"):
        read_documents(tmp_path)


def test_a_loop_of_links_is_named(tmp_path: Path) -> None:
    (tmp_path / "a.md").symlink_to(tmp_path / "b.md")
    (tmp_path / "b.md").symlink_to(tmp_path / "a.md")
    with pytest.raises(AlambicError, match=r"a\.md: a loop of links"):
        read_documents(tmp_path)


def test_web_page_furniture_is_dropped(tmp_path: Path) -> None:
    (tmp_path / "prices.html").write_text(
        '<html><body><nav><a href="/">Home</a> <a href="/shop">Shop</a></nav>'
        '<div class="cookie-banner">We use cookies. Accept</div>'
        "<main><h1>Prices</h1><p>The AeroPress costs £39.</p></main>"
        "<footer>© 2026 Qahwa Lane · Privacy</footer></body></html>",
        encoding="utf-8",
    )
    assert read_one(tmp_path).text == "# Prices\n\nThe AeroPress costs £39."
