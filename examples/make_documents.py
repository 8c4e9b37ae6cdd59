"""Writes the support-desk example's non-text documents: the warranty terms as a PDF, the price list as a
spreadsheet, and a PDF twin of the Arabic page. Run it again after editing the text below:

    .venv/bin/python examples/make_documents.py [FOLDER]   (default: the example's docs/)

Needs the dev extras (fpdf2 with uharfbuzz for shaped Arabic, openpyxl). The fonts are matplotlib's DejaVu Sans,
which has Arabic glyphs and is installed with alambic.
"""

from __future__ import annotations

import datetime
import re
import sys
from pathlib import Path

import matplotlib
import openpyxl
from fpdf import FPDF

DOCS = Path(__file__).resolve().parents[1] / "src/alambic/examples/support-desk/docs"
FONTS = Path(matplotlib.get_data_path()) / "fonts/ttf"
FIXED_DATE = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)

WARRANTY_PAGES = [
    """# Qahwa Lane Roasters: warranty terms

These terms apply to equipment bought from Qahwa Lane Roasters in our Edinburgh shop or online. They are in
addition to your rights under UK consumer law, which they do not reduce.

Coffee is not covered by this warranty. If a bag of coffee is faulty or damaged, see our returns page: we
replace it free of charge.

## Who can claim
The warranty is for the person who bought the item. Keep your order number or your receipt: we need it for
every claim. Gifts can be claimed by the person who received them with the order number of the buyer.""",
    """# Warranty periods

## Grinders
The Comandante C40 hand grinder has a two-year warranty against manufacturing faults. Burrs are wear parts and
are covered for the first 12 months only. A grinder that was used to grind spices or grain is not covered.

## Kettles
The Fellow Stagg EKG kettle has a two-year warranty. Limescale damage is not covered: descale it every month
in hard-water areas. The kettle has a UK plug; using it with a travel adapter abroad voids the warranty.

## Brewers and the dallah
The Hario V60 dripper and the AeroPress are covered for one year against cracks that were not caused by a fall.
The brass dallah made in Amman is covered for one year against leaks at the seams; tarnish is normal and is
not a fault.""",
    """# How to make a claim

Email support@qahwalane.example with your order number, a short description of the fault and a photo or a
short video of it. We answer within two working days.

If the fault is covered, we send a prepaid label and repair or replace the item within 14 days of receiving
it. If the same item is no longer sold, we offer a similar one or a full refund. Items sent to us from outside
the UK are repaired free of charge, but the postage to us is paid by the customer.

A repaired or replaced item keeps the warranty of the original: it does not start a new two-year period.""",
]

COFFEE = [
    ("Coffee", "Origin", "Roast", "250 g (£)", "1 kg (£)"),
    ("Harbour Blend", "Brazil and Ethiopia", "medium-dark", 9.50, 32.00),
    ("Yirgacheffe Kochere", "Ethiopia", "light", 12.00, 41.00),
    ("Huila Pink Bourbon", "Colombia", "light-medium", 13.50, None),
    ("Mocha Haraaz", "Yemen", "medium", 18.00, None),
    ("Sugar-cane Decaf", "Colombia", "medium", 10.50, 35.00),
]
EQUIPMENT = [
    ("Item", "Price (£)", "Warranty"),
    ("Hario V60 02 ceramic dripper", 24.00, "1 year"),
    ("V60 filter papers (100)", 6.00, "none"),
    ("AeroPress Original with 350 filters", 39.00, "1 year"),
    ("Comandante C40 hand grinder", 235.00, "2 years (burrs 12 months)"),
    ("Fellow Stagg EKG kettle, 0.9 l", 165.00, "2 years"),
    ("Qahwa Lane dallah, 0.7 l", 58.00, "1 year"),
]


def pdf_document(title: str) -> FPDF:
    pdf = FPDF()
    pdf.set_title(title)
    pdf.set_creation_date(FIXED_DATE)
    pdf.add_font("dejavu", fname=str(FONTS / "DejaVuSans.ttf"))
    pdf.add_font("dejavu", style="B", fname=str(FONTS / "DejaVuSans-Bold.ttf"))
    pdf.set_margins(20, 20, 20)
    return pdf


def write_markdown_page(pdf: FPDF, markdown: str, align: str = "L") -> None:
    """One page: '#' lines as headings, other blocks as paragraphs."""
    pdf.add_page()
    for block in markdown.split("\n\n"):
        lines = block.split("\n")
        while lines and (heading := re.match(r"^(#+)\s+(.*)", lines[0])):
            size = 17 if len(heading.group(1)) == 1 else 13
            pdf.set_font("dejavu", "B", size)
            pdf.multi_cell(0, size * 0.55, heading.group(2), align=align, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
            lines = lines[1:]
        if lines:
            pdf.set_font("dejavu", "", 11)
            pdf.multi_cell(0, 5.2, " ".join(lines), align=align, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(3)


def warranty_pdf(target: Path) -> None:
    pdf = pdf_document("Qahwa Lane Roasters: warranty terms")
    for page in WARRANTY_PAGES:
        write_markdown_page(pdf, page)
    pdf.output(str(target))


def arabic_pdf(source: Path, target: Path) -> None:
    """The Arabic page as a PDF shaped the way word processors shape it, so its text layer is in visual order."""
    pdf = pdf_document("معلومات لعملائنا الناطقين بالعربية")
    pdf.set_text_shaping(True, direction="rtl", script="arab", language="ara")
    sections = source.read_text(encoding="utf-8").split("\n## ")
    write_markdown_page(pdf, sections[0], align="R")
    for section in sections[1:]:
        pdf.set_font("dejavu", "B", 13)
        write_markdown_page(pdf, "## " + section, align="R")
    pdf.output(str(target))


def price_list(target: Path) -> None:
    workbook = openpyxl.Workbook()
    workbook.properties.created = workbook.properties.modified = FIXED_DATE.replace(tzinfo=None)
    coffee = workbook.active
    coffee.title = "Coffee"
    for row in COFFEE:
        coffee.append(row)
    equipment = workbook.create_sheet("Equipment")
    for row in EQUIPMENT:
        equipment.append(row)
    workbook.save(target)


def main(target: Path = DOCS) -> None:
    warranty_pdf(target / "warranty-terms.pdf")
    price_list(target / "price-list.xlsx")
    arabic_pdf(DOCS / "arabic-customers.md", target / "arabic-customers.pdf")
    print(f"wrote warranty-terms.pdf, price-list.xlsx and arabic-customers.pdf in {target}", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DOCS)
