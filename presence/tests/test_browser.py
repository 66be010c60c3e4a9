"""The presence page in a real Chromium, against live Daphne processes sharing Redis and the test database.

Every wait is a Playwright expectation with a timeout; nothing sleeps.
"""

import asyncio
import re
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from channels_redis.core import RedisChannelLayer
from django.utils import timezone
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from presence import protocol
from presence_site.testing import CHROMIUM_ARGS, LiveServer, session_cookie
from realtime import protocol as transport

# Transactional: the live servers read what the test writes (a parametrized test would otherwise get `db`).
pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery-9"
ALLOW_ASYNC_UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"

expect.set_options(timeout=5_000)

# Records every frame a page's sockets send, in window.__sent.
RECORD_SENT_FRAMES = """
window.__sent = [];
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) { window.__sent.push(String(data)); return send.call(this, data); };
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Debian chromium for the module, closed at the end."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed: the browser tests need Debian's chromium (apt-get install chromium)")
    # Playwright's sync API keeps its own event loop registered as running in
    # this thread, which trips Django's async-safety check on every ORM call of
    # the tests (and of the database teardown) although nothing runs on that
    # loop: the ORM calls block only the test, which waits on them anyway.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv(ALLOW_ASYNC_UNSAFE, "true")
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def live_env(live_env) -> dict[str, str]:
    """The live servers keep Django's async-safety check (see browser())."""
    return {key: value for key, value in live_env.items() if key != ALLOW_ASYNC_UNSAFE}


@pytest.fixture
def server(live_server_factory) -> LiveServer:
    return live_server_factory()


@pytest.fixture
def new_context(browser) -> Iterator[Callable[..., BrowserContext]]:
    """Open browser contexts (one per person), logged in through a session cookie; all closed at teardown."""
    contexts: list[BrowserContext] = []

    def open_(server: LiveServer, user=None, *, width: int = 1280, height: int = 800) -> BrowserContext:
        context = browser.new_context(
            base_url=server.http, viewport={"width": width, "height": height}, locale="en-GB", timezone_id="UTC"
        )
        if user is not None:
            _, key = session_cookie(user)
            context.add_cookies([{"name": "sessionid", "value": key, "url": server.http}])
        contexts.append(context)
        return context

    yield open_
    for context in contexts:
        context.close()


def presence_page(context: BrowserContext) -> Page:
    """Open the presence page and wait until its socket is open and the snapshot applied."""
    page = context.new_page()
    page.goto("/")
    expect(page.locator("html[data-presence=live]")).to_have_count(1)
    me = page.locator(".whoami").get_attribute("data-username")
    expect(online(page, me)).to_be_visible()
    return page


def online(page: Page, username: str):
    return page.locator("#online-list li.user").filter(has=page.locator(".name", has_text=username))


def recent(page: Page, username: str):
    return page.locator("#recent-list li.user").filter(has=page.locator(".name", has_text=username))


def set_hidden(page: Page, hidden: bool) -> None:
    """Headless pages are always visible: stand in for the tab going to the background and back."""
    page.evaluate(
        """hidden => {
             const state = hidden ? "hidden" : "visible";
             Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
             Object.defineProperty(document, "visibilityState", {configurable: true, get: () => state});
             document.dispatchEvent(new Event("visibilitychange"));
           }""",
        hidden,
    )


def test_login_through_the_form_shows_the_user_online_to_others_within_a_second(server, new_context, make_user):
    alice = make_user("alice")
    make_user("bob")
    watcher = presence_page(new_context(server, alice))

    page = new_context(server).new_page()
    page.goto("/")
    expect(page).to_have_url(f"{server.http}/accounts/login/?next=/")
    page.get_by_label("Username").fill("bob")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".form-errors")).to_contain_text("Please enter a correct username and password")
    expect(online(watcher, "bob")).to_have_count(0)

    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{server.http}/")
    expect(online(watcher, "bob")).to_be_visible(timeout=1_000)
    expect(online(watcher, "bob")).to_have_attribute("data-state", "online")
    expect(watcher.locator("#online-count")).to_have_text("2")
    expect(watcher.locator("#feed")).to_contain_text("bob came online")


def test_signup_shows_field_errors_next_to_the_fields(server, new_context, make_user):
    make_user("taken")
    page = new_context(server, width=375, height=800).new_page()
    page.goto("/accounts/signup/")
    page.get_by_label("Username").fill("taken")
    page.get_by_label("Password", exact=True).fill("short")
    page.get_by_label("Password confirmation").fill("different")
    page.get_by_role("button", name="Sign up").click()
    expect(page.locator(".form-errors")).to_be_visible()
    expect(page.locator(".field-invalid")).to_have_count(2)
    expect(page.locator(".field-invalid", has=page.locator("#id_username"))).to_contain_text("already exists")
    expect(page.locator(".field-invalid", has=page.locator("#id_password2"))).to_contain_text("didn’t match")
    # The summary links to the field it names.
    page.locator(".form-errors a", has_text="Username").click()
    expect(page.locator("#id_username")).to_be_focused()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scrolling on a phone


def test_closing_the_last_tab_shows_the_user_offline_with_a_last_seen_time(server, new_context, make_user):
    alice, bob = make_user("alice"), make_user("bob")
    watcher = presence_page(new_context(server, alice))
    bob_page = presence_page(new_context(server, bob))
    expect(online(watcher, "bob")).to_be_visible()

    bob_page.close()
    expect(online(watcher, "bob")).to_have_count(0)
    expect(recent(watcher, "bob")).to_contain_text("last seen just now")
    expect(recent(watcher, "bob").locator("time")).to_have_attribute("datetime", re.compile(r"^\d{4}-\d\d-\d\dT.*Z$"))
    expect(watcher.locator("#online-count")).to_have_text("1")
    expect(watcher.locator("#feed")).to_contain_text("bob went offline")


def publish_diff(redis_url: str, joins: list[dict], leaves: list[dict]) -> None:
    """Hand a presence diff to the live servers' channel layer, as another process would."""

    async def send() -> None:
        layer = RedisChannelLayer(hosts=[redis_url], prefix="presence")
        try:
            await layer.group_send(
                protocol.PRESENCE_GROUP,
                transport.forward_event(protocol.diff_frame(joins, leaves, 0), group=protocol.PRESENCE_GROUP),
            )
        finally:
            await layer.close_pools()

    # The sync Playwright API keeps an event loop marked running in this thread.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, send()).result()


def test_a_transition_older_than_what_the_page_shows_is_ignored(server, new_context, make_user, redis_url):
    """Two processes coalesce their diffs apart: a user's leave there can arrive after their join here."""
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    watcher = presence_page(new_context(server, alice))
    presence_page(new_context(server, bob))
    carol_page = presence_page(new_context(server, carol))
    expect(online(watcher, "bob")).to_be_visible()
    carol_page.close()
    expect(recent(watcher, "carol")).to_be_visible()

    long_ago = "2020-01-01T00:00:00Z"
    publish_diff(redis_url, joins=[{"username": "carol", "since": long_ago}], leaves=[])
    publish_diff(redis_url, joins=[], leaves=[{"username": "bob", "last_seen": long_ago}])
    # Frames from one sender arrive in order: once this one shows, the stale ones were handled.
    publish_diff(redis_url, joins=[{"username": "marker", "since": transport.iso(timezone.now())}], leaves=[])
    expect(online(watcher, "marker")).to_be_visible()
    expect(online(watcher, "bob")).to_be_visible()
    expect(online(watcher, "carol")).to_have_count(0)
    expect(recent(watcher, "carol")).to_be_visible()
    feed = watcher.locator("#feed").inner_text()
    assert "bob went offline" not in feed and feed.count("carol came online") == 1


def test_closing_one_of_two_tabs_keeps_the_user_online(server, new_context, make_user):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    watcher = presence_page(new_context(server, alice))
    bob_context = new_context(server, bob)
    first, second = presence_page(bob_context), presence_page(bob_context)
    carol_page = presence_page(new_context(server, carol))
    expect(online(watcher, "carol")).to_be_visible()

    first.close()
    # Carol leaves after bob's tab closed: her leave is announced after his
    # would have been, so once she shows offline, bob's fate is known.
    carol_page.close()
    expect(recent(watcher, "carol")).to_be_visible()
    expect(online(watcher, "bob")).to_be_visible()
    expect(recent(watcher, "bob")).to_have_count(0)
    assert "bob went offline" not in watcher.locator("#feed").inner_text()
    expect(second.locator("#conn-state")).to_be_hidden()


def test_logging_out_closes_the_socket_and_other_tabs_go_to_log_in(server, new_context, make_user):
    alice, bob = make_user("alice"), make_user("bob")
    watcher = presence_page(new_context(server, alice))
    bob_context = new_context(server, bob)
    clicked, other = presence_page(bob_context), presence_page(bob_context)

    clicked.get_by_role("button", name="Log out").click()
    expect(clicked).to_have_url(f"{server.http}/accounts/login/")
    # The other tab's socket is closed with 4000 and the page follows to log-in.
    # The close can overtake the session flush (Django signals the log-out
    # first): the log-in page then bounces once through "/", hence either form.
    expect(other).to_have_url(re.compile(re.escape(server.http) + r"/accounts/login/\?next=(%2F|/)$"))
    expect(online(watcher, "bob")).to_have_count(0)
    expect(recent(watcher, "bob")).to_be_visible()


def test_html_like_usernames_show_as_text(server, new_context, make_user):
    alice = make_user("alice")
    early = make_user('<img src=x onerror="window.__pwned=1">')
    late = make_user("<b>x</b><script>window.__pwned=2</script>")
    presence_page(new_context(server, early))  # online before alice's page loads: in json_script
    watcher = presence_page(new_context(server, alice))
    late_page = presence_page(new_context(server, late))  # arrives live: in a presence.diff
    late_page.close()  # and leaves: in "recently seen"

    expect(online(watcher, "<img src=x")).to_have_count(1)
    expect(online(watcher, "<img src=x").locator(".name")).to_have_text('<img src=x onerror="window.__pwned=1">')
    expect(recent(watcher, "<b>x</b>").locator(".name")).to_have_text("<b>x</b><script>window.__pwned=2</script>")
    expect(watcher.locator("#feed")).to_contain_text("<b>x</b><script>window.__pwned=2</script> went offline")
    assert watcher.locator("#main img, #main b, #main script:not([type])").count() == 0
    assert watcher.evaluate("typeof window.__pwned") == "undefined"


def test_an_untouched_tab_shows_as_away_and_comes_back_on_interaction(live_server_factory, new_context, make_user):
    server = live_server_factory(PRESENCE_IDLE_AFTER="1")
    alice, bob = make_user("alice"), make_user("bob")
    watcher = presence_page(new_context(server, alice))
    bob_page = presence_page(new_context(server, bob))
    expect(online(watcher, "bob")).to_be_visible()

    expect(online(watcher, "bob")).to_have_attribute("data-state", "away")
    expect(online(watcher, "bob")).to_contain_text("away")
    expect(watcher.locator("#feed")).to_contain_text("bob is away")

    bob_page.mouse.move(20, 20)
    bob_page.mouse.move(40, 60)
    expect(online(watcher, "bob")).to_have_attribute("data-state", "online")
    expect(watcher.locator("#feed")).to_contain_text("bob is back")

    # A tab in the background goes idle too, and coming back into view is activity.
    set_hidden(bob_page, True)
    expect(online(watcher, "bob")).to_have_attribute("data-state", "away")
    set_hidden(bob_page, False)
    expect(online(watcher, "bob")).to_have_attribute("data-state", "online")


def test_a_server_restart_shows_reconnecting_then_back_online_and_resyncs(live_server_factory, new_context, make_user):
    first, second = live_server_factory(), live_server_factory()
    alice, bob = make_user("alice"), make_user("bob")
    context = new_context(first, alice)
    context.add_init_script(RECORD_SENT_FRAMES)
    watcher = presence_page(context)
    state = watcher.locator("#conn-state")

    first.halt()
    expect(state).to_have_text("Reconnecting…")
    # A frame put in the outbox while disconnected is kept and sent after the reconnect.
    assert (
        watcher.evaluate("presencePage.enqueue({type: 'ping', client_id: 'kept-1'}) && presencePage.isOpen()") is False
    )
    # Bob comes online on the other process while alice's is down: she misses
    # the diff, and must learn of him from the snapshot after reconnecting.
    presence_page(new_context(second, bob))
    first.start()
    expect(state).to_have_text("Back online", timeout=15_000)
    expect(online(watcher, "bob")).to_be_visible()
    expect(online(watcher, "alice")).to_be_visible()
    expect(watcher.locator("#online-count")).to_have_text("2")
    watcher.wait_for_function("window.__sent.some(text => text.includes('kept-1'))")


def test_screenshots_of_the_presence_page(server, new_context, make_user, screenshot_dir):
    names = ["alice", "bob.martin", "carol", "dmitri", "emma_w", "farah", "george"]
    users = {name: make_user(name) for name in names}
    for name in ["emma_w", "farah", "george"]:  # seen earlier, now offline
        presence_page(new_context(server, users[name])).close()
    pages = {}
    for width, height, label in [(1280, 800, "desktop"), (375, 812, "phone")]:
        pages[label] = presence_page(new_context(server, users["alice"], width=width, height=height))
    for name in ["bob.martin", "carol", "dmitri"]:
        page = presence_page(new_context(server, users[name]))
        if name == "dmitri":
            page.evaluate("window.presencePage.send({type: 'presence.state', state: 'idle'})")
    for label, page in pages.items():
        expect(online(page, "dmitri")).to_have_attribute("data-state", "away")
        expect(page.locator("#online-count")).to_have_text("4")
        expect(recent(page, "george")).to_be_visible()
        page.mouse.move(5, 5)  # alice herself is active
        assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]
        page.screenshot(path=screenshot_dir / f"presence-{label}.png", full_page=True)


def test_keyboard_reaches_the_log_out_button_with_a_visible_focus(server, new_context, make_user):
    page = presence_page(new_context(server, make_user("alice")))
    page.keyboard.press("Tab")
    expect(page.locator(".skip-link")).to_be_focused()
    seen = []
    for _ in range(6):
        page.keyboard.press("Tab")
        seen.append(page.evaluate("document.activeElement.textContent.trim()"))
        if seen[-1] == "Log out":
            break
    assert seen[-1] == "Log out", seen
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{server.http}/accounts/login/")


def test_socket_module_backoff_outbox_and_unread_marker(server, new_context, make_user):
    page = presence_page(new_context(server, make_user("alice")))
    # Full jitter: every delay below min(30 s, 0.5 s × 2^attempt), and spread out.
    bounds = page.evaluate(
        """() => [0, 1, 2, 5, 6, 12].map(n => {
             const delays = Array.from({length: 200}, () => PresenceSocket.backoff(n));
             return [Math.min(...delays), Math.max(...delays)];
           })"""
    )
    for attempt, (low, high) in zip([0, 1, 2, 5, 6, 12], bounds, strict=True):
        cap = min(30_000, 500 * 2**attempt)
        assert 0 <= low < cap * 0.2 and cap * 0.8 < high < cap, (attempt, low, high)

    # The outbox keeps a frame until it is acknowledged; sent at once while open.
    pending = page.evaluate(
        """() => {
             const key = presencePage.enqueue({type: "ping", client_id: "c-1"});
             const before = presencePage.pending().length;
             presencePage.ack(key);
             return [key, before, presencePage.pending().length];
           }"""
    )
    assert pending == ["c-1", 1, 0]

    # Unread marker: counts in the title while hidden, cleared when the tab is seen.
    title = page.title()
    set_hidden(page, True)
    page.evaluate("PresenceSocket.unread.bump(); PresenceSocket.unread.bump(2)")
    expect(page).to_have_title(f"(3) {title}")
    set_hidden(page, False)
    expect(page).to_have_title(title)


# ---------- every page keeps you online; status, expiry, invisibility ----------


def open_menu(page):
    page.locator("#status-menu > summary").click()
    expect(page.locator("#status-form")).to_be_visible()


@pytest.mark.parametrize("where", ["/chat/", "/accounts/password/"])
def test_a_user_reading_another_page_stays_online_for_others(live_server_factory, new_context, make_user, where):
    # The default leave grace: going from page to page closes one socket and opens the next within it.
    server = live_server_factory(PRESENCE_LEAVE_GRACE="1.5")
    alice, bob = make_user("alice"), make_user("bob")
    watcher = presence_page(new_context(server, alice))
    bob_page = new_context(server, bob).new_page()
    bob_page.goto(where)
    expect(bob_page.locator("html[data-connection=ok]")).to_have_count(1)
    expect(online(watcher, "bob")).to_be_visible()
    # Moving between such pages is a reload of the socket, within the leave grace: no "went offline".
    bob_page.goto("/chat/" if where != "/chat/" else "/accounts/password/")
    expect(bob_page.locator("html[data-connection=ok]")).to_have_count(1)
    expect(online(watcher, "bob")).to_be_visible()
    expect(watcher.locator("#feed")).not_to_contain_text("bob went offline")
    bob_page.close()
    expect(recent(watcher, "bob")).to_be_visible()


def test_staff_in_the_admin_stay_online(server, new_context, make_user):
    alice = make_user("alice")
    root = make_user("root", is_staff=True, is_superuser=True)
    watcher = presence_page(new_context(server, alice))
    admin = new_context(server, root).new_page()
    admin.goto("/admin/")
    expect(online(watcher, "root")).to_be_visible()


def test_a_status_with_an_expiry_shows_for_others_and_goes_away_at_its_time(server, new_context, make_user):
    alice, bob = make_user("alice"), make_user("bob")
    watcher = presence_page(new_context(server, alice))
    bob_page = new_context(server, bob).new_page()
    bob_page.goto("/chat/")
    expect(online(watcher, "bob")).to_be_visible()

    open_menu(bob_page)
    bob_page.locator(".status-picks button", has_text="In a meeting").click()
    bob_page.locator("#status-expiry").select_option("at")
    # Two seconds from now in the page's own clock (a datetime-local input has whole minutes at best; set it exactly).
    bob_page.evaluate(
        """() => {
             const input = document.getElementById("status-until");
             const at = new Date(Date.now() + 2500);
             const pad = n => String(n).padStart(2, "0");
             input.type = "text";  // datetime-local drops the seconds this test needs
             input.value = `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())}T${pad(at.getHours())}:` +
                           `${pad(at.getMinutes())}:${pad(at.getSeconds())}`;
           }"""
    )
    bob_page.locator("#status-dnd").check()
    bob_page.get_by_role("button", name="Save").click()
    expect(bob_page.locator("#status-form")).to_be_hidden()
    expect(bob_page.locator("#my-status")).to_contain_text("In a meeting")
    expect(bob_page.locator("body[data-dnd='1']")).to_have_count(1)

    entry = online(watcher, "bob")
    expect(entry.locator(".user-status")).to_contain_text("📅")
    expect(entry.locator(".user-status")).to_contain_text("In a meeting")
    expect(entry.locator(".badge-dnd")).to_be_visible()
    # Cleared by the server at its time (within a heartbeat: 1 s here), for everyone and for bob.
    expect(entry.locator(".user-status")).to_have_count(0, timeout=6_000)
    expect(bob_page.locator("#my-status")).not_to_contain_text("In a meeting")
    expect(bob_page.locator("body[data-dnd='1']")).to_have_count(0)


def test_a_refused_status_says_why_and_changes_nothing(server, new_context, make_user):
    bob = make_user("bob")
    page = presence_page(new_context(server, bob))
    open_menu(page)
    page.locator("#status-emoji").fill("not an emoji")
    page.locator("#status-text").fill("Hello")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#status-error")).to_contain_text("one emoji")
    expect(page.locator("#my-status")).not_to_contain_text("Hello")


def test_invisible_bob_is_offline_for_alice_and_online_to_himself_and_can_still_chat(server, new_context, make_user):
    alice, bob = make_user("alice"), make_user("bob")
    watcher = presence_page(new_context(server, alice))
    bob_page = new_context(server, bob).new_page()
    bob_page.goto("/")
    expect(bob_page.locator("html[data-presence=live]")).to_have_count(1)
    expect(online(watcher, "bob")).to_be_visible()

    open_menu(bob_page)
    bob_page.locator("#status-invisible").check()
    bob_page.get_by_role("button", name="Save").click()
    expect(bob_page.locator("#my-status .badge-invisible")).to_be_visible()
    expect(online(watcher, "bob")).to_have_count(0)
    expect(recent(watcher, "bob")).to_be_visible()
    expect(watcher.locator("#feed")).to_contain_text("bob went offline")
    mine = online(bob_page, "bob")
    expect(mine).to_be_visible()
    expect(mine).to_contain_text("invisible to others")

    # A reload (a new socket) keeps him invisible, and tells alice nothing.
    bob_page.reload()
    expect(bob_page.locator("html[data-presence=live]")).to_have_count(1)
    expect(online(bob_page, "bob")).to_contain_text("invisible to others")
    expect(online(watcher, "bob")).to_have_count(0)

    open_menu(bob_page)
    bob_page.locator("#status-invisible").uncheck()
    bob_page.get_by_role("button", name="Save").click()
    expect(online(watcher, "bob")).to_be_visible()
    expect(watcher.locator("#feed")).to_contain_text("bob came online")
