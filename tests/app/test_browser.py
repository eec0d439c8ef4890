"""The page in real headless Chromium: log in, ask for an item, rank its 4 candidates with mouse and keyboard, submit;
an admin closes an iterate round from the Admin tab.

Needs the Debian packages `chromium` (and `chromium-driver` for other drivers) and the pip package
`playwright` (driving /usr/bin/chromium; `playwright install` is never needed). Skips when either is missing.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from app_helpers import ADMIN, LABELERS, make_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CANDIDATES = [
    "You did a great job today.",
    "<script>window.__xss = 1</script>Thank you!",
    "<b>bold</b> kindness",
    '<img src=x onerror="window.__xss = 2">nice',
]


def browser_api():
    """playwright's sync API, or a skip saying what is missing."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium chromium-driver)")
    return pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is not installed (pip install playwright)"
    )


def log_in(page, url: str, name: str, password: str) -> None:
    page.goto(url)  # no session yet: the server sends the browser to its login page
    page.wait_for_selector("#login-name", timeout=30_000)
    page.fill("#login-name", name)
    page.fill("#login-password", password)
    page.click("#login-btn")
    page.wait_for_selector(f"#who :text('{name}')", timeout=30_000)


def test_rank_with_mouse_and_keyboard_in_chromium(tmp_path, running_app):
    sync_api = browser_api()
    items = tmp_path / "browser_items.jsonl"
    items.write_text(json.dumps({"prompt": "Say something kind.", "completions": CANDIDATES}) + "\n")
    service, url = running_app(make_config(tmp_path, labelers=1, items_path=str(items)))
    screenshot = Path(os.environ.get("LABEL_SCREENSHOT_DIR", tmp_path)) / "label_page.png"

    with sync_api.sync_playwright() as playwright:
        # Playwright adds --headless and a fresh temporary --user-data-dir itself.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1300})
            log_in(page, url, *LABELERS[0])
            assert page.get_by_role("tab", name="Admin").count() == 0  # a labeler has no Admin tab
            cookies = {c["name"]: c for c in page.context.cookies()}
            assert cookies["label_session"]["httpOnly"] and cookies["label_session"]["sameSite"] == "Strict"
            assert service.store.open_assignment(LABELERS[0][0]) is None  # logging in took no item
            page.click("#next-btn")
            page.wait_for_selector("#cand-row-3", state="visible", timeout=30_000)
            assert not page.is_visible("#cand-row-4")  # K = 4 slots shown
            shown = [page.input_value(f"#cand-text-{slot} textarea") for slot in range(4)]
            assert sorted(shown) == sorted(CANDIDATES)  # markup arrives as literal text

            # Mouse: candidate 1 gets rank 2; the keyboard highlight moves on to candidate 2.
            page.click('#rank-0 [data-testid="2-radio-label"]')
            # Keyboard: ranks 1, 4, 3 for candidates 2, 3, 4.
            for key in "143":
                page.keyboard.press(key)
            for slot, rank in enumerate((2, 1, 4, 3)):
                assert page.is_checked(f'#rank-{slot} input[value="{rank}"]'), (slot, rank)
            page.screenshot(path=str(screenshot), full_page=True)

            page.keyboard.press("Enter")
            page.wait_for_selector("#status :text('Ranking saved')", timeout=30_000)
            assert page.evaluate("window.__xss") is None  # neither the script nor the onerror ran
            assert page.locator("#cand-row-0 img").count() == 0
        finally:
            browser.close()

    (record,) = service.store.records(LABELERS[0][0])
    assert record["action"] == "rank"
    ranks_shown = [record["ranks"][original] for original in record["order_shown"]]
    assert ranks_shown == [2, 1, 4, 3]
    assert [record["completions"][original] for original in record["order_shown"]] == shown
    assert screenshot.stat().st_size > 10_000


def test_an_admin_closes_a_round_from_the_admin_tab(tmp_path, running_app):
    sync_api = browser_api()
    service, url = running_app(make_config(tmp_path, labelers=1))
    service.store.add_round_items(1, "run-a", [("p1", ["a", "b"]), ("p2", ["c", "d"])], "iterate")
    assert not service.store.round_status(1, 2)["closed"]

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            log_in(page, url, *ADMIN)
            page.get_by_role("tab", name="Admin").click()
            page.fill("#round-number input", "1")
            page.click("#close-round-btn")
            page.wait_for_selector(":text('closed round 1')", timeout=30_000)
        finally:
            browser.close()

    status = service.store.round_status(1, 2)
    assert status["closed"] and status["closed_by"] == ADMIN[0] and status["complete"] == 0
