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
