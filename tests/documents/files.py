"""Documents of each format, written by the libraries people make them with, for the ingestion tests."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import matplotlib

FONT = Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf"
ARABIC = [
    "سياسة الضمان",
    "يغطي الضمان عيوب التصنيع لمدة سنتين من تاريخ الشراء، ويجب الاحتفاظ بالفاتورة الأصلية.",
    "لا يشمل الضمان الأضرار الناتجة عن سوء الاستخدام أو الترسبات الكلسية في الغلاية.",
    "للمطالبة بالضمان راسلنا مع رقم الطلب وصورة للعطل، وسنرد خلال يومي عمل.",
]


def pdf(path: Path, pages: list[list[str]], *, shaped_rtl: bool = False) -> Path:
    """A PDF with one page per list of paragraphs; shaped_rtl lays text out right to left as word processors do."""
    from fpdf import FPDF

    document = FPDF()
    document.add_font("dejavu", fname=str(FONT))
    document.set_font("dejavu", size=12)
    if shaped_rtl:
        document.set_text_shaping(True, direction="rtl", script="arab", language="ara")
    for paragraphs in pages:
        document.add_page()
        for paragraph in paragraphs:
            document.multi_cell(0, 6, paragraph, align="R" if shaped_rtl else "L", new_x="LMARGIN", new_y="NEXT")
            document.ln(4)
    document.output(str(path))
    return path


def scanned_pdf(path: Path, image: Path) -> Path:
    """A PDF whose pages are only a picture of text, as a scanner makes them."""
    from fpdf import FPDF
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (600, 200), "white")
    ImageDraw.Draw(picture).text((20, 80), "Warranty: two years from purchase.", fill="black")
    picture.save(image)
    document = FPDF()
    for _ in range(2):
        document.add_page()
        document.image(str(image), x=10, y=10, w=180)
    document.output(str(path))
    return path


def encrypted_pdf(path: Path) -> Path:
    from fpdf import FPDF
    from fpdf.enums import EncryptionMethod

    document = FPDF()
    document.add_font("dejavu", fname=str(FONT))
    document.set_font("dejavu", size=12)
    document.set_encryption(owner_password="owner", user_password="secret", encryption_method=EncryptionMethod.RC4)
    document.add_page()
    document.multi_cell(0, 6, "Confidential price list.")
    document.output(str(path))
    return path


def docx(path: Path) -> Path:
    import docx as python_docx

    document = python_docx.Document()
    document.add_heading("Returns policy", level=1)
    document.add_paragraph("Unopened coffee can be returned within 30 days for a full refund.")
    document.add_heading("Faulty equipment", level=2)
    document.add_paragraph("Equipment has a two-year warranty against manufacturing faults.")
    document.add_paragraph("سياسة الإرجاع: يمكن إرجاع القهوة غير المفتوحة خلال 30 يوماً.")
    document.save(str(path))
    return path


def pptx(path: Path) -> Path:
    from pptx import Presentation

    deck = Presentation()
    for title, body in [("Our roasts", "We roast on Tuesdays and Thursdays."), ("Wholesale", "Cafés get 20% off.")]:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    deck.save(str(path))
    return path


def xlsx(path: Path, *, formulas_only: bool = False) -> Path:
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Coffee"
    if formulas_only:
        sheet.append(["=1+1", "=A1*2"])
        sheet.append(["=SUM(A1:B1)", "=A2/2"])
    else:
        sheet.append(["Coffee", "250 g (£)"])
        sheet.append(["Harbour Blend", 9.5])
        sheet.append(["Mocha Haraaz", 18])
        equipment = workbook.create_sheet("Equipment")
        equipment.append(["Item", "Price (£)"])
        equipment.append(["Comandante C40 hand grinder", 235])
    workbook.save(path)
    return path


def epub(path: Path) -> Path:
    """A minimal EPUB 3 (a zip of XHTML with its package file), as e-book tools write it."""
    chapter = (
        '<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml"><head><title>Guide</title>'
        "</head><body><h1>Brewing guide</h1><p>Use 15 g of coffee for 250 g of water at 94 °C.</p></body></html>"
    )
    package = (
        '<?xml version="1.0" encoding="utf-8"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0" '
        'unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:identifier id="id">'
        "qahwa-guide</dc:identifier><dc:title>Brewing guide</dc:title><dc:language>en</dc:language></metadata>"
        '<manifest><item id="c1" href="chapter1.xhtml" media-type="application/xhtml+xml"/></manifest>'
        '<spine><itemref idref="c1"/></spine></package>'
    )
    container = (
        '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
        '<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
        "</rootfiles></container>"
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        archive.writestr("META-INF/container.xml", container)
        archive.writestr("OEBPS/content.opf", package)
        archive.writestr("OEBPS/chapter1.xhtml", chapter)
    return path


# Documents that cannot be read, each with the words its one-line error must say (re.escape'd by the tests).
UNREADABLE: dict[str, tuple[Callable[[Path], object], str]] = {
    "scanned-pdf": (lambda docs: scanned_pdf(docs / "scan.pdf", docs.parent / "scan.png"), "scan.pdf: no text layer"),
    "encrypted-pdf": (lambda docs: encrypted_pdf(docs / "locked.pdf"), "locked.pdf: encrypted PDF"),
    "corrupt-docx": (lambda docs: (docs / "terms.docx").write_bytes(b"PK\x03\x04 torn"), "terms.docx: not a valid"),
    "formulas-only-xlsx": (lambda docs: xlsx(docs / "sums.xlsx", formulas_only=True), "sums.xlsx: 4 formula cell(s)"),
    "dangling-link": (lambda docs: (docs / "gone.md").symlink_to(docs / "moved-away.md"), "gone.md: broken link"),
    "old-word-file": (lambda docs: (docs / "old.doc").write_bytes(b"\xd0\xcf\x11\xe0"), "old.doc: unsupported"),
}
