"""The whole flow in real headless Chromium, against gunicorn, a real rq worker and SMTP server.

Screenshots of every step go to test-artifacts/screenshots/ (the docs reuse them).
"""

import os
import shutil

import pytest

from tests.conftest import ARTIFACTS, process_env
from tests.support import WebProcess

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = ARTIFACTS / "screenshots"
# Flags for a closed network: no background calls home, no sandbox as root in CI.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture()
def browser_page():
    """A Playwright page in Debian's headless Chromium (skipped with the reason if it is missing)."""
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1000, "height": 760})
        page.set_default_timeout(15_000)
        yield page
        browser.close()


@pytest.fixture()
def dev_web(app, tmp_path):
    """gunicorn serving the development config (inbox and dashboard on) on the test servers."""
    env = process_env(app)
    env.update(FLASK_CONFIG="development", DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"], MAILDIR=app.config["MAILDIR"])
    web = WebProcess(env, tmp_path / "web.log")
    env["SITE_URL"] = web.base_url  # the links in mails point at this server
    web.start()
    yield web
    web.stop()


def shot(page, name):
    """Save a full-page PNG screenshot of the current step."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_signup_inbox_confirm_login_dashboard(browser_page, dev_web, worker_env, start_worker):
    page = browser_page
    start_worker(worker_env)

    page.goto(dev_web.base_url + "/auth/signup")
    page.fill("#email", "ada@example.com")
    page.fill("#password", "correct horse battery")
    page.fill("#password2", "correct horse battery")
    shot(page, "01-signup-form")
    page.click("#submit")
    page.wait_for_selector("#check-inbox")
    shot(page, "02-check-inbox")

    # The worker sends the mail within moments; reload the inbox until it is there.
    for _ in range(40):
        page.goto(dev_web.base_url + "/dev/mail/")
        if page.locator("#inbox a").count():
            break
        page.wait_for_timeout(250)
    assert page.locator("#inbox a").first.inner_text() == "[Flask Mailer] Confirm your account"
    shot(page, "03-inbox")

    page.locator("#inbox a").first.click()
    page.wait_for_selector("#mail-text")
    shot(page, "04-confirmation-mail")

    page.locator('#mail-text a[href*="/auth/confirm/"]').click()
    page.wait_for_selector("text=Your account is confirmed")
    shot(page, "05-confirmed")

    page.fill("#email", "ada@example.com")
    page.fill("#password", "correct horse battery")
    page.click("#submit")
    page.wait_for_selector("#welcome")
    assert "ada@example.com" in page.inner_text("#welcome")
    shot(page, "06-signed-in")

    page.goto(dev_web.base_url + "/rq/")
    page.wait_for_selector("text=mailers")
    shot(page, "07-rq-dashboard")

    page.goto(dev_web.base_url + "/dev/")
    page.wait_for_selector("#redis-roles")
    shot(page, "08-dev-hub")
    assert os.path.getsize(SHOTS / "07-rq-dashboard.png") > 10_000


def test_confirmation_mail_html_keeps_its_long_link_inside_a_narrow_frame(app, browser_page):
    from flask import render_template, url_for

    from app.auth.tokens import make_confirm_token
    from app.models import User

    with app.test_request_context():
        link = url_for("auth.confirm", token=make_confirm_token(User(id=1, email="ada@example.com")), _external=True)
        html = render_template("email/confirm.html", email="ada@example.com", confirm_url=link)
    page = browser_page
    page.set_viewport_size({"width": 360, "height": 640})  # a phone, or the inbox's frame on a small screen
    page.set_content(html)
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    shot(page, "10-confirmation-mail-360px")
    assert widths[0] <= widths[1], f"the page is {widths[0]} px wide in a {widths[1]} px frame ({len(link)}-character link)"


def test_dashboard_queue_table_fits_its_panel_at_1100_px(app, browser_page, dev_web):
    from tests.support import mailers_queue

    mailers_queue(app).enqueue("builtins.print", "a row for the queue table")  # no worker: it stays queued
    page = browser_page
    page.set_viewport_size({"width": 1100, "height": 700})
    page.goto(dev_web.base_url + "/rq/")
    page.wait_for_selector("#queues tr[data-role=queue]")
    table = page.locator("#queues").bounding_box()
    panel = page.locator(".section").first.bounding_box()
    assert table["x"] + table["width"] <= panel["x"] + panel["width"], (table, panel)
    shot(page, "09-rq-dashboard-1100px")


@pytest.fixture()
def built_site(tmp_path):
    """The docs built with mkdocs and served from a local HTTP server on loopback."""
    import functools
    import http.server
    import subprocess
    import sys
    import threading

    from tests.support import ROOT

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))

    class QuietHandler(handler.func):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_docs_diagrams_render_offline(browser_page, built_site):
    import re

    from tests.support import ROOT

    page = browser_page
    page.set_viewport_size({"width": 1280, "height": 900})
    # Offline: every request that leaves the local site is refused (a CDN copy of mermaid included).
    page.route(re.compile(r"^(?!" + re.escape(built_site) + ").*"), lambda route: route.abort())
    english = [path for path in sorted((ROOT / "docs").glob("*.md")) if not path.name.endswith(".ja.md")]
    pages = [path.stem for path in english if "```mermaid" in path.read_text()]
    assert {"index", "rq", "cache", "sessions", "deploying"} <= set(pages)
    # Each page with a diagram, in English and in its Japanese edition (under /ja/).
    for name, language in [(name, language) for name in pages for language in ("", "ja/")]:
        source = ROOT / "docs" / (f"{name}.ja.md" if language else f"{name}.md")
        blocks = source.read_text().count("```mermaid")
        page.goto(f"{built_site}/{language}{'' if name == 'index' else name + '/'}")
        # Material swaps each <pre class="mermaid"> source for a <div class="mermaid"> holding the
        # SVG (in a closed shadow root, so we look at the swap and the drawing's size).
        page.wait_for_function(
            f"document.querySelectorAll('div.mermaid').length >= {blocks}"
            " && !document.querySelector('pre.mermaid')"
        )
        page.add_style_tag(content=".md-header { display: none; }")  # not over the screenshots
        for number, diagram in enumerate(page.locator("div.mermaid").all(), start=1):
            assert diagram.bounding_box()["height"] > 100, f"{name}: diagram {number} is empty"
            SHOTS.mkdir(parents=True, exist_ok=True)
            diagram.screenshot(path=str(SHOTS / f"diagram-{language.strip('/') or 'en'}-{name}-{number}.png"))
