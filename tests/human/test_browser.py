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
    page.keyboard.press("3")  # score mode: the number key rates
    expect(page.locator("#completion")).to_have_text(EVIL)
    page.keyboard.press("u")  # undo: the 3 is retracted (kept in the store) and sample a comes back
    page.wait_for_selector(f"text=undid your rating of sample {a}")
    expect(page.locator("#completion")).to_have_text("A lovely film with a dull ending.")
    assert "0 rated" in page.text_content("#progress")
    page.keyboard.press("4")
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
    page.keyboard.press("a")
    page.wait_for_selector("text=No pairs left to compare")
    page.click("#undo")  # undo the preference: the same pair comes back, then "b" prefers B
    expect(page.locator("#completion-b")).to_have_text(EVIL)
    page.keyboard.press("b")
    page.wait_for_selector("text=No pairs left to compare")

    got = [(r.rater, r.kind, r.sample_id, r.score, r.token_scores, r.preferred) for r in store.ratings()]
    assert got == [("ann", "score", a, 4.0, None, None), ("ann", "score", b, 2.0, None, None),
                   ("bob", "tokens", a, None, (0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0), None),
                   ("cat", "preference", a, None, None, b)]
    retracted = [(r.rater, r.sample_id, r.score, r.preferred) for r in store.ratings(include_retracted=True)
                 if r.retracted is not None]
    assert retracted == [("ann", a, 3.0, None), ("cat", a, None, a)]  # undone, never deleted
    assert [s.id for s in store.pending("ann")] == [c]  # the skipped sample is still pending


def _browser(pw):
    return pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--headless"])


def test_token_in_url_fragment_is_used_and_never_logged(store, capfd):
    sync_api = pytest.importorskip("playwright.sync_api")
    from textgym.human.server import make_server

    srv = make_server(store, port=0, token="tok123", quiet=False)  # logs each request to stderr
    srv.start_background()
    store.add_samples([{"prompt": "p", "completion": "c"}, {"prompt": "p", "completion": "d"}])
    try:
        with sync_api.sync_playwright() as pw:
            browser = _browser(pw)
            page = browser.new_page()
            page.set_default_timeout(15000)
            page.goto(srv.url + "#token=tok123")
            page.fill("#rater", "ann")
            page.press("#rater", "Enter")
            page.wait_for_selector("body[data-ready='1']")
            assert "tok123" not in page.url  # taken out of the address bar and the history entry
            page.keyboard.press("5")
            page.wait_for_selector("text=saved rating of sample")
            page.reload()  # the tab keeps the token (sessionStorage) without it in the URL
            page.wait_for_selector("body[data-ready='1']")
            page.keyboard.press("4")
            page.wait_for_selector("text=Nothing left to rate")
            browser.close()
    finally:
        srv.shutdown()
        srv.server_close()
    assert [(r.rater, r.score) for r in store.ratings()] == [("ann", 5.0), ("ann", 4.0)]
    log = capfd.readouterr().err
    assert '"POST /api/ratings HTTP/1.1" 201' in log and "GET / HTTP/1.1" in log  # the requests were logged
    assert "tok123" not in log


ATTACK = r"""<!doctype html><html><body>
<iframe name="sink1"></iframe><iframe name="sink2"></iframe>
<script>
const T = "%(target)s";
const rating = (who) => JSON.stringify({sample_id: 1, rater: who, score: 5});
// a complete JSON rating request hidden in a body: stored if the server ever parses an unread body
const smuggle = (body) => "POST /api/ratings HTTP/1.1\r\nHost: %(host)s\r\nContent-Type: application/json\r\n" +
  "Content-Length: " + body.length + "\r\n\r\n" + body;
function form(sink, name, value) {  // enctype=text/plain sends name + "=" + value + CRLF, unescaped
  const f = document.createElement("form");
  f.method = "POST"; f.action = T + "api/ratings"; f.enctype = "text/plain"; f.target = sink;
  const i = document.createElement("input");
  i.type = "hidden"; i.name = name; i.value = value;
  f.appendChild(i); document.body.appendChild(f);
  return new Promise((done) => { document.querySelector(`iframe[name=${sink}]`).onload = done; f.submit(); });
}
async function attack() {
  const post = (body, type) => fetch(T + "api/ratings", {method: "POST", mode: "no-cors", body: body,
                                                          headers: type ? {"Content-Type": type} : {}});
  await Promise.allSettled([
    post(rating("fetch-text"), "text/plain"),
    post(new Blob([rating("fetch-blob")], {type: "application/json"})),
    post(smuggle(rating("fetch-smuggled")), "text/plain"),
  ]);
  const open = '{"sample_id": 1, "rater": "form-%%s", "score": 5, "uid": "';  // JSON swallows the "=x"
  const smuggled = open.replace("%%s", "smuggled"), plain = open.replace("%%s", "plain");
  await form("sink1", smuggle(smuggled + '=x"}').slice(0, -('=x"}'.length)), 'x"}');
  await form("sink2", plain, 'x"}');
  document.title = "done";
}
attack();
</script></body></html>"""


@pytest.mark.parametrize("attacker_host", ["localhost", "127.0.0.1"], ids=["cross-site", "same-site-other-port"])
def test_page_on_another_origin_cannot_rate(store, capfd, attacker_host):
    """A web page the rater happens to visit (here on another origin) posts ratings at the server with no-cors
    fetches and text/plain forms, plain and with a request smuggled in the body: nothing is stored."""
    sync_api = pytest.importorskip("playwright.sync_api")
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from textgym.human.server import make_server

    srv = make_server(store, port=0, quiet=False)
    srv.start_background()
    store.add_samples([{"prompt": "p", "completion": "c"}])
    host = f"127.0.0.1:{srv.server_address[1]}"
    html = (ATTACK % {"target": srv.url, "host": host}).encode()

    class Evil(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(html)))
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, *args):
            pass

    evil = ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        with sync_api.sync_playwright() as pw:
            browser = _browser(pw)
            page = browser.new_page()
            page.set_default_timeout(15000)
            page.goto(f"http://{attacker_host}:{evil.server_address[1]}/")
            page.wait_for_function("document.title === 'done'")
            page.wait_for_timeout(500)  # let anything the server still reads arrive
            browser.close()
    finally:
        evil.shutdown()
        evil.server_close()
        srv.shutdown()
        srv.server_close()
    log = capfd.readouterr().err
    assert store.ratings(include_retracted=True) == []
    assert log.count('"POST /api/ratings HTTP/1.1" 403') >= 5, log  # all five reached the server, refused
    assert '"POST /api/ratings HTTP/1.1" 2' not in log, log
