"""The Content-Security-Policy in a real browser: the presence page runs, its socket connects, nothing is blocked."""

import shutil

import pytest

from presence_site.testing import CHROMIUM_ARGS, session_cookie

pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.django_db(transaction=True)]


# Collects violations from the page itself; init scripts are not subject to the page's policy.
REPORT_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (event) {
  window.__cspViolations.push(event.violatedDirective + " " + event.blockedURI);
});
"""


def test_presence_page_runs_under_the_policy_in_chromium(live_server_factory, make_user):
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("Debian's chromium package is not installed")
    server = live_server_factory()
    _, key = session_cookie(make_user("alice"))
    console: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.add_cookies([{"name": "sessionid", "value": key, "url": server.http}])
            page = context.new_page()
            page.add_init_script(REPORT_VIOLATIONS)
            page.on("console", lambda message: console.append(message.text))
            response = page.goto(server.http + "/")
            policy = response.headers["content-security-policy"]
            # The snapshot that lists alice arrives over the socket, so this proves connect-src allows it.
            page.wait_for_selector('#online-list li[data-username="alice"]', timeout=10000)
            violations = page.evaluate("window.__cspViolations")
        finally:
            browser.close()
    assert f"connect-src 'self' ws://127.0.0.1:{server.port}" in policy
    assert violations == []
    assert not [line for line in console if "Content Security Policy" in line]
