"""The rating page in a real headless Chromium (Debian's ``chromium``, driven by Playwright's Python client).

Marked ``browser``; CI runs it (``make test`` installs chromium first). Set ``TEXTGYM_SCREENSHOT=1`` to also
write ``docs/img/rater.png`` for the README.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("TEXTGYM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
EVIL = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'


@pytest.fixture
def page(server):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: run `make browser` (apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--headless"])
        page = browser.new_page(viewport={"width": 1100, "height": 720})
        page.set_default_timeout(15000)
        yield page
        browser.close()


def _wait_ready(page) -> None:
    page.wait_for_selector("body[data-ready='1']")


def test_rate_by_keys_clicks_tokens_and_ab(page, server, store):
    from playwright.sync_api import expect

    a, b, c = store.add_samples([
        {"prompt": "Write a review:", "completion": "A lovely film with a dull ending.",
         "tokens": ["A", " lovely", " film", " with", " a", " dull", " ending", "."], "completion_ids": list(range(8))},
        {"prompt": "Write a review:", "completion": EVIL},
        {"prompt": "Write a poem:", "completion": "Roses are red."},
    ])
    page.goto(server.url)
    page.fill("#rater", "ann")
    page.press("#rater", "Enter")
    _wait_ready(page)
    assert page.text_content("#completion") == "A lovely film with a dull ending."
    page.keyboard.press("4")  # score mode: the number key rates
    expect(page.locator("#completion")).to_have_text(EVIL)  # (page JS is CSP-locked: no wait_for_function)
    # the <script> completion is shown as literal text and never ran
    assert page.text_content("#completion") == EVIL
    assert page.evaluate("window.pwned") is None
    assert page.locator("#completion script, #completion img").count() == 0
    page.click("button.score-btn[data-score='2']")
    expect(page.locator("#completion")).to_have_text("Roses are red.")
    page.keyboard.press("s")  # skip
    page.wait_for_selector("text=Nothing left to rate")
    assert "2 rated" in page.text_content("#progress")

    page.click("#mode-tokens")  # per-token: click " lovely" once (good) and " dull" twice (bad)
    page.fill("#rater", "bob")
    page.press("#rater", "Enter")
    page.wait_for_selector(".tok")
    page.locator(".tok").nth(1).click()
    page.locator(".tok").nth(5).click()
    page.locator(".tok").nth(5).click()
    page.keyboard.press("Enter")
    page.wait_for_selector("text=saved rating of sample")

    page.click("#mode-pair")  # A/B: "b" prefers the second completion
    page.fill("#rater", "cat")
    page.press("#rater", "Enter")
    expect(page.locator("#completion-b")).to_have_text(EVIL)
    assert page.evaluate("window.pwned") is None
    if os.environ.get("TEXTGYM_SCREENSHOT"):
        out = Path(__file__).resolve().parents[2] / "docs" / "img" / "rater.png"
        page.screenshot(path=str(out), full_page=True)
    page.keyboard.press("b")
    page.wait_for_selector("text=No pairs left to compare")

    got = [(r.rater, r.kind, r.sample_id, r.score, r.token_scores, r.preferred) for r in store.ratings()]
    assert got == [("ann", "score", a, 4.0, None, None), ("ann", "score", b, 2.0, None, None),
                   ("bob", "tokens", a, None, (0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0), None),
                   ("cat", "preference", a, None, None, b)]
    assert [s.id for s in store.pending("ann")] == [c]  # the skipped sample is still pending


def test_token_in_url_is_sent(store):
    sync_api = pytest.importorskip("playwright.sync_api")
    from textgym.human.server import make_server

    srv = make_server(store, port=0, token="tok123", quiet=True)
    srv.start_background()
    store.add_samples([{"prompt": "p", "completion": "c"}])
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--headless"])
            page = browser.new_page()
            page.set_default_timeout(15000)
            page.goto(srv.url + "?token=tok123")
            page.fill("#rater", "ann")
            page.press("#rater", "Enter")
            page.wait_for_selector("body[data-ready='1']")
            page.keyboard.press("5")
            page.wait_for_selector("text=Nothing left to rate")
            browser.close()
    finally:
        srv.shutdown()
        srv.server_close()
    assert [(r.rater, r.score) for r in store.ratings()] == [("ann", 5.0)]
