"""The room page in a real browser (Chromium through Playwright) against a real Daphne process."""

import shutil

import pytest

from chat.models import Room
from presence.testing import live_cookie

pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.django_db(transaction=True)]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed: the browser tests need it (apt-get install chromium)")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def page_for(browser, server, cookie: str):
    context = browser.new_context()
    name, value = cookie.split("=", 1)
    context.add_cookies([{"name": name, "value": value, "url": server.http}])
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    return page


def test_messages_render_as_text_live_with_typing_and_failed_sends_keep_the_text(
    request, live_server_factory, make_user
):
    Room.objects.create(slug="lobby", title="Lobby")
    cookies = [live_cookie(make_user(name)) for name in ("alice", "bob")]
    server = live_server_factory()
    # Playwright runs an event loop in this thread: no ORM calls once it has started.
    browser = request.getfixturevalue("browser")
    alice, bob = (page_for(browser, server, cookie) for cookie in cookies)
    for page in (alice, bob):
        page.goto(f"{server.http}/chat/lobby/")
    for page in (alice, bob):
        page.wait_for_function("document.getElementById('here-count').textContent === '2'")

    payload = '<img src=x onerror="window.pwned=1"><b>bold</b> & done'
    alice.click("#composer-body")
    alice.keyboard.type(payload)
    bob.wait_for_function("document.getElementById('typing').textContent === 'alice is typing…'")
    alice.keyboard.press("Enter")
    bob.wait_for_function(
        "text => [...document.querySelectorAll('#messages .body')].some(n => n.textContent === text)", arg=payload
    )
    alice.wait_for_function("document.getElementById('composer-body').value === ''")
    for page in (alice, bob):
        assert page.locator("#messages img, #messages b").count() == 0
        assert page.evaluate("window.pwned") is None
    assert alice.locator("#messages li.message-mine").count() == 1
    assert bob.locator("#messages li.message-mine").count() == 0

    too_long = "y" * 2001
    bob.fill("#composer-body", too_long)
    bob.keyboard.press("Enter")
    bob.wait_for_function("!document.getElementById('composer-error').hidden")
    assert bob.input_value("#composer-body") == too_long
    assert alice.errors == [] and bob.errors == []
