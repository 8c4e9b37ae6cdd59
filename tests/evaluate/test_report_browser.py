"""report.html in a real browser (Debian's Chromium, driven by Playwright): no table wider than the page, long
answers folded behind "more", right-to-left answers right-aligned. The screenshot is kept as a test artifact."""

from pathlib import Path

import pytest

from alambic.evaluate.report import FOLD_CHARACTERS, write_report
from alambic.results import DistillResult, EvalResult, ModelScore

from ..conftest import ARTIFACTS, CHROMIUM, QUIET, needs_chromium

pytestmark = needs_chromium()

UNBROKEN = "ĠtheĠtheĠshopĠĠ" * 60  # an untrained model's output: one run of characters with no space
LONG = "We roast every Tuesday and Thursday, and ship the same day. " * 12
ARABIC = "نعم، نشحن إلى مصر خلال ستة إلى عشرة أيام عمل، مع رقم تتبع."


def render(path: Path) -> None:
    model = {"f1": 0.2, "cosine": 0.5, "heldout_loss": 3.2, "kl_to_teacher": 1.1, "tokens_per_second": 90.0}
    labels = ["base (untrained)", "student (sft)", "teacher"]
    recalls = [0.0, 0.25, 0.5]
    summary = EvalResult(
        questions=3,
        distill_run="distill-1",
        models=[
            ModelScore(**model, role=label, label=label, size="57M", fact_recall=recall, fact_recall_interval=(0, 1))
            for label, recall in zip(labels, recalls, strict=True)
        ],
        report="report.html",
        compared_runs={"sft": "distill-1"},
    )
    training = DistillResult(
        base="embedded",
        kept_layers=[0, 3],
        base_layers=4,
        prune_strategy="even",
        parameters=1000,
        adapter="full",
        examples=9,
        steps=3,
        train_tokens=600,
        tokens_per_second=200.0,
        bf16=False,
        losses=[(1, 3.0), (2, 2.5), (3, 2.2)],
        dataset="dataset-1",
        init_dir="init",
        student_dir="student",
    )
    examples = [
        {
            "question": "When do you roast?",
            "source": "warranty-terms.pdf, page 2",
            "reference": LONG,
            "answers": dict(zip(labels, [UNBROKEN, LONG, "Tue."], strict=True)),
        },
        {
            "question": "هل تشحنون إلى مصر؟",
            "source": "arabic-customers.pdf, page 3",
            "reference": ARABIC,
            "answers": dict.fromkeys(labels, ARABIC),
        },
    ]
    write_report(path, "Qahwa Lane", summary, training, examples)


@pytest.mark.parametrize("width", [1280, 800])
def test_the_report_fits_the_page_and_folds_long_answers(tmp_path: Path, width: int) -> None:
    from playwright.sync_api import sync_playwright

    report = tmp_path / "report.html"
    render(report)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", *QUIET])
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(report.as_uri())
            page_width = page.evaluate("document.documentElement.clientWidth")
            table_widths = page.evaluate("[...document.querySelectorAll('table')].map(t => t.scrollWidth)")
            assert len(table_widths) == 2 and max(table_widths) <= page_width, (table_widths, page_width)
            assert page.evaluate("document.documentElement.scrollWidth") <= page_width
            plot = page.locator("img[alt='answer speed against fact recall']")
            assert plot.evaluate("img => img.complete && img.naturalWidth > 0")

            cells = page.locator("td.answer")
            assert cells.count() == 10
            sources = page.locator("td.source").all_inner_texts()
            assert sources == ["warranty-terms.pdf, page 2", "arabic-customers.pdf, page 3"]
            assert all(cells.nth(i).get_attribute("dir") == "auto" for i in range(cells.count()))
            arabic = page.locator("td.answer", has_text="نشحن إلى مصر").first
            assert arabic.evaluate("cell => getComputedStyle(cell).direction") == "rtl"
            assert arabic.evaluate("cell => cell.firstChild.textContent").startswith("نعم")
            # Right-aligned: the text's right edge is at the cell's right edge (minus padding), not its left.
            right_gap = arabic.evaluate(
                "cell => { const r = document.createRange(); r.selectNodeContents(cell.firstChild);"
                " const t = r.getBoundingClientRect(), c = cell.getBoundingClientRect(); return c.right - t.right; }"
            )
            assert right_gap < 16, right_gap

            folded = page.locator("td.answer details")
            assert folded.count() == 3  # the long reference, the long answer and the unbroken one
            first = page.locator("td.answer", has_text="Thursday").first
            visible = first.inner_text()
            assert len(visible) < FOLD_CHARACTERS + 20 and "more" in visible
            first.locator("summary").click()
            assert first.inner_text().count("Thursday") == 12
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"report-{width}px.png"), full_page=True)
        finally:
            browser.close()
