"""The /ui page in real headless Chromium (Debian's, driven by Playwright): a question gets a streamed answer with
what the agent did, an Arabic message reads right to left, and a reviewer's rejection reaches the ledger. The
screenshot is kept as a test artifact."""

import shutil
from pathlib import Path

import pytest

from alambic.project import Project
from alambic.review import dataset_rows
from tests.conftest import ARTIFACTS, CHROMIUM, QUIET, alambic_server, needs_chromium

pytestmark = needs_chromium()
ARABIC = "متى تحمصون القهوة؟"


@pytest.fixture(scope="module")
def page_project(agent_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ui") / "shop"
    shutil.copytree(agent_project, root, ignore=shutil.ignore_patterns("conversations.sqlite*"))
    return root


def test_chat_review_and_arabic_in_the_page(page_project: Path) -> None:
    from playwright.sync_api import sync_playwright

    with alambic_server(page_project, "--no-auth") as (url, _, _), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", *QUIET])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(f"{url}/ui")
            page.fill("#question", "Where is my order QL-1006?")
            with page.expect_response("**/v1/chat/completions") as answered:
                page.click("#ask button[type=submit]")
            assert answered.value.headers["content-type"].startswith("text/event-stream")
            page.wait_for_selector(".message.assistant details.agent", timeout=60_000)
            assert page.locator(".message.assistant").first.inner_text().strip()
            assert "order_status" in page.locator("details.agent summary").first.inner_text()

            page.fill("#question", ARABIC)
            page.click("#ask button[type=submit]")
            page.wait_for_selector(".message.assistant:nth-of-type(4) details.agent", timeout=60_000)
            arabic = page.locator(".message.user", has_text=ARABIC)
            assert arabic.inner_text() == ARABIC
            assert arabic.evaluate("e => getComputedStyle(e).direction") == "rtl"
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "ui-chat.png"), full_page=True)

            page.click("nav button[data-tab=review]")
            page.wait_for_selector("#items tbody tr")
            page.select_option("#status", "ok")
            with page.expect_response("**/ui/api/items?*status=ok*"):
                page.click("#filters button[type=submit]")
            first = page.locator("#items tbody tr").first
            item = first.get_attribute("data-id")
            first.locator("button", has_text="Reject").click()
            page.wait_for_function(
                "id => document.querySelector(`tr[data-id='${id}'] .status`).textContent.startsWith('rejected')",
                arg=item,
            )
            page.screenshot(path=str(ARTIFACTS / "ui-review.png"), full_page=True)
        finally:
            browser.close()
    with Project.open(page_project).ledger as ledger:
        row = {row["id"]: row for row in dataset_rows(ledger)}[item]
    assert (row["status"], row["reason"]) == ("rejected", "human_review")
