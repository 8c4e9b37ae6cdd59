"""Document ingestion: PDF pages per second, and peak memory as the PDF grows (the goal is flat: pages are read
one at a time), against markitdown's own PDF converter on the same files."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from figures import figure

SPEED_PAGES = 200
SMALL, LARGE = 50, 400
PARAGRAPH = (
    "Page {n}. The Comandante C40 hand grinder has a two-year warranty against manufacturing faults; burrs are "
    "wear parts and are covered for twelve months. Descale the Fellow Stagg kettle every month in hard-water "
    "areas. Orders placed before 11:00 on a roasting day leave the same day, and customers outside the UK pay "
    "the return postage themselves. "
)

# Run in a fresh interpreter, so each peak RSS is that conversion's alone.
MEASURE = """
import resource, sys, time, tracemalloc
from pathlib import Path
path, converter, traced = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "traced"
if converter == "alambic":
    from alambic.documents.pdf import convert_pdf
    convert = lambda: convert_pdf(path).text
else:
    from markitdown import StreamInfo
    from markitdown.converters import PdfConverter
    def convert():
        with path.open("rb") as stream:
            return PdfConverter().convert(stream, StreamInfo(extension=".pdf")).markdown
import pdfminer.high_level, pdfminer.layout  # imported before the baseline, by both converters
if traced:
    tracemalloc.start()
started = time.perf_counter()
text = convert()
seconds = time.perf_counter() - started
assert "Page 1." in text, text[:200]
peak = tracemalloc.get_traced_memory()[1] / 2**20 if traced else 0.0
print(seconds, peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, sys.getsizeof(text) / 2**20)
"""


def make_pdf(path: Path, pages: int) -> Path:
    from fpdf import FPDF

    document = FPDF()
    document.set_font("helvetica", size=11)
    for n in range(1, pages + 1):
        document.add_page()
        document.set_font("helvetica", "B", 15)
        document.cell(0, 10, f"Section {n}: warranty and returns", new_x="LMARGIN", new_y="NEXT")
        document.set_font("helvetica", size=11)
        for _ in range(4):
            document.multi_cell(0, 5.5, PARAGRAPH.format(n=n), new_x="LMARGIN", new_y="NEXT")
            document.ln(3)
    document.output(str(path))
    return path


def seconds_to_convert(path: Path, converter: str) -> float:
    return float(_measure(path, converter, traced=False)[0])


def peak_heap_mb(path: Path, converter: str) -> tuple[float, float]:
    """The most memory the conversion held at once, traced by tracemalloc (pdfminer is pure Python, so all of it),
    and the size of the text it returned; the process's peak RSS is printed too, but it is reached while importing
    and hides what converting costs."""
    _, peak, rss, text = _measure(path, converter, traced=True)
    print(
        f"{converter} {path.stem} pages: heap peak {peak:.2f} MB, text {text:.2f} MB, process peak RSS {rss:.0f} MB",
        file=sys.stderr,
    )
    return peak, text


def _measure(path: Path, converter: str, traced: bool) -> list[float]:
    command = [sys.executable, "-c", MEASURE, str(path), converter, "traced" if traced else "timed"]
    return list(map(float, subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()))


def run() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        pdfs = {pages: make_pdf(Path(tmp) / f"{pages}.pdf", pages) for pages in (SMALL, SPEED_PAGES, LARGE)}
        print(f"made the test PDFs in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        ours_seconds = seconds_to_convert(pdfs[SPEED_PAGES], "alambic")
        peer_seconds = seconds_to_convert(pdfs[SPEED_PAGES], "markitdown")
        (ours_small, text_small), (ours_large, text_large) = (peak_heap_mb(pdfs[n], "alambic") for n in (SMALL, LARGE))
        peer_large, _ = peak_heap_mb(pdfs[LARGE], "markitdown")
        # Flat: what converting the small file held, plus the longer text the large one returns (its pages and
        # their joined copy), and nothing more.
        flat = ours_small + 2 * (text_large - text_small)
        sizes = {pages: pdf.stat().st_size / 1e6 for pages, pdf in pdfs.items()}
    print(f"PDF sizes: {', '.join(f'{p} pages {mb:.2f} MB' for p, mb in sizes.items())}", file=sys.stderr)
    return [
        figure(
            "ingest-pages-per-second",
            SPEED_PAGES / ours_seconds,
            "pages/s",
            f"markitdown PdfConverter ({SPEED_PAGES}-page PDF)",
            SPEED_PAGES / peer_seconds,
            ">=1",
        ),
        figure(
            f"ingest-peak-memory-{LARGE}-pages",
            ours_large,
            "MB",
            f"flat: the {SMALL}-page peak plus the extra text returned",
            flat,
            "<=1.1",
        ),
        figure(
            f"ingest-peak-memory-{LARGE}-pages-vs-markitdown",
            ours_large,
            "MB",
            f"markitdown PdfConverter, {LARGE} pages",
            peer_large,
            "<=1",
        ),
    ]
