"""The room page in a real Chromium, against live Daphne processes sharing Redis and the test database.

Every wait is a Playwright expectation with a timeout; nothing sleeps.
"""

import re

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from chat.models import Message, Room
from chat.services import message_post
from presence.tests.test_browser import (  # noqa: F401  (fixtures shared with the presence page's tests)
    RECORD_SENT_FRAMES,
    browser,
    live_env,
    new_context,
    online,
    presence_page,
    server,
    set_hidden,
)

pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.django_db(transaction=True)]

# Records the URL of every socket a page opens, in window.__sockets.
RECORD_SOCKET_URLS = """
window.__sockets = [];
const Native = window.WebSocket;
window.WebSocket = function (url, protocols) { window.__sockets.push(String(url)); return new Native(url, protocols); };
window.WebSocket.prototype = Native.prototype;
Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
"""


def room_page(context: BrowserContext, slug: str = "lobby") -> Page:
    """Open a room and wait until its socket is open."""
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(f"/chat/{slug}/")
    expect(page.locator("html[data-connection=ok]")).to_have_count(1)
    return page


def bodies(page: Page):
    """The stored messages' bodies, in page order."""
    return page.locator("#messages li[data-id] .message-body")


def write(page: Page, text: str) -> None:
    page.locator("#composer-body").fill(text)
    page.locator("#composer-body").press("Enter")


def test_messages_typing_and_html_like_text_show_live_as_text(live_server_factory, new_context, make_user):
    server = live_server_factory(PRESENCE_IDLE_AFTER="1")
    Room.objects.create(slug="lobby", title="Lobby")
    alice, other = make_user("alice"), make_user("<b>x</b>")
    watcher = presence_page(new_context(server, make_user("carol")))
    alice_page = room_page(new_context(server, alice))
    other_page = room_page(new_context(server, other))
    for page in (alice_page, other_page):
        expect(page.locator("#here-count")).to_have_text("2")
    expect(alice_page.locator("#here-list .name")).to_have_text(["<b>x</b>", "alice (you)"])

    payload = '<img src=x onerror="window.__pwned=1">'
    alice_page.locator("#composer-body").press_sequentially(payload[:5])
    expect(other_page.locator("#typing")).to_have_text("alice is typing…")
    alice_page.locator("#composer-body").press_sequentially(payload[5:])
    alice_page.keyboard.press("Enter")
    expect(bodies(other_page)).to_have_text([payload])
    expect(other_page.locator("#typing")).to_have_text("")  # a message ends the typing line
    expect(bodies(alice_page)).to_have_text([payload])
    expect(alice_page.locator("#messages li")).to_have_count(1)  # the stored copy replaced the draft
    expect(alice_page.locator("#composer-body")).to_have_value("")
    expect(alice_page.locator("#messages li.message-own")).to_have_count(1)
    expect(other_page.locator("#messages li.message-own")).to_have_count(0)

    write(other_page, "<b>bold?</b> & <i>done</i>")
    expect(alice_page.locator("#messages .message-author")).to_have_text(["alice", "<b>x</b>"])
    expect(bodies(alice_page).nth(1)).to_have_text("<b>bold?</b> & <i>done</i>")

    # A chat tab reports idle and active too: the other person, in the room only, shows as away and back.
    expect(online(watcher, "<b>x</b>")).to_have_attribute("data-state", "away")
    other_page.mouse.move(10, 10)
    other_page.mouse.move(30, 40)
    expect(online(watcher, "<b>x</b>")).to_have_attribute("data-state", "online")

    # While the tab is hidden, others' messages count in the title; seeing the tab clears it.
    title = other_page.title()
    set_hidden(other_page, True)
    write(alice_page, "one")
    write(alice_page, "two")
    expect(other_page).to_have_title(f"(2) {title}")
    set_hidden(other_page, False)
    expect(other_page).to_have_title(title)

    # Too long for the server: refused at once, and the text stays in the composer.
    too_long = "y" * 2001
    write(other_page, too_long)
    expect(other_page.locator("#composer-error")).to_contain_text("at most 2,000 characters")
    expect(other_page.locator("#composer-body")).to_have_value(too_long)

    for page in (alice_page, other_page):
        assert page.locator("#main img, #main b, #main i").count() == 0
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert page.errors == []


def test_a_server_restart_resumes_the_room_with_every_message_once_in_order(
    live_server_factory, new_context, make_user
):
    first, second = live_server_factory(), live_server_factory()
    room = Room.objects.create(slug="lobby", title="Lobby")
    alice, bob = make_user("alice"), make_user("bob")
    # A message the page's history shows: the resume point (messages seen live are not).
    history_id = message_post(room=room, user=alice, body="earlier", client_id=None)[0]["id"]
    alice_page = room_page(new_context(second, alice))
    bob_context = new_context(first, bob)
    bob_context.add_init_script(RECORD_SOCKET_URLS)
    bob_page = room_page(bob_context)
    expect(bob_page.locator("#here-count")).to_have_text("2")
    write(alice_page, "before")
    expect(bodies(bob_page)).to_have_text(["earlier", "before"])

    first.halt()
    state = bob_page.locator("#conn-state")
    expect(state).to_have_text("Reconnecting…")
    # Alice, on the other process, writes while bob's is down.
    gap = ["gap 1", "gap 2", "gap 3"]
    for text in gap:
        write(alice_page, text)
    expect(bodies(alice_page)).to_have_text(["earlier", "before", *gap])
    # Bob writes while disconnected: the message waits in the outbox.
    write(bob_page, "written offline")
    draft = bob_page.locator("#messages li[data-client-id]")
    expect(draft).to_have_class(re.compile(r"\bmessage-failed\b"))
    expect(draft).to_contain_text("not sent yet, will retry")
    assert bob_page.evaluate("chatPage.pending().map(frame => frame.body)") == ["written offline"]
    # Alice deletes a message of bob's page history and one he saw live; he hears of neither now.
    for body in ("earlier", "before"):
        alice_page.locator("#messages li[data-id]", has_text=body).get_by_role("button", name="Delete").click()
    expect(bodies(alice_page)).to_have_text(gap)

    first.start()
    expect(state).to_have_text("Back online", timeout=15_000)
    expected = [*gap, "written offline"]
    expect(bodies(bob_page)).to_have_text(expected)
    expect(bodies(alice_page)).to_have_text(expected)
    expect(bob_page.locator("#messages li[data-client-id]")).to_have_count(0)
    assert bob_page.evaluate("chatPage.pending()") == []
    # The reconnect resumed after the newest message of the page's history.
    urls = bob_page.evaluate("window.__sockets")
    assert all(url.endswith(f"/ws/chat/lobby/?after={history_id}") for url in urls), urls
    assert Message.objects.filter(body="written offline").count() == 1
    assert bob_page.errors == [] and alice_page.errors == []


def test_screenshots_of_a_room(server, new_context, make_user, screenshot_dir):
    room = Room.objects.create(slug="design-review", title="Design review")
    alice, bob = make_user("alice"), make_user("bob.martin")
    for user, body in [
        (bob, "Morning! The new presence page is up on staging."),
        (alice, "Looks great. The away dot reads well at small sizes."),
        (bob, "Next: the room page. Reconnects now resume where they left off,\nso nothing is lost or shown twice."),
        (alice, "I'll try it from my phone on the train."),
    ]:
        message_post(room=room, user=user, body=body)
    pages = {
        "desktop": room_page(new_context(server, alice, width=1280, height=800), room.slug),
        "phone": room_page(new_context(server, alice, width=375, height=812), room.slug),
    }
    bob_page = room_page(new_context(server, bob), room.slug)
    bob_page.locator("#composer-body").press_sequentially("Sounds")
    for label, page in pages.items():
        expect(page.locator("#here-count")).to_have_text("2")
        expect(bodies(page)).to_have_count(4)
        expect(page.locator("#typing")).to_have_text("bob.martin is typing…")
        assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]
        page.screenshot(path=screenshot_dir / f"room-{label}.png", full_page=True)


def test_the_room_list_links_each_room_and_creates_one_by_keyboard(server, new_context, make_user):
    Room.objects.create(slug="lobby", title="Lobby")
    page = new_context(server, make_user("alice"), width=375, height=800).new_page()
    page.goto("/chat/")
    expect(page.locator(".room-card")).to_have_count(1)
    expect(page.locator(".room-card")).to_contain_text("nobody here now")
    page.get_by_label("Room name").focus()
    page.keyboard.type("Book club")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{server.http}/chat/book-club/")
    expect(page.locator("#here-count")).to_have_text("1")
    expect(page.locator("#composer-body")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375


def test_rate_limited_messages_are_retried_in_order_and_refused_ones_return_to_the_composer(
    live_server_factory, new_context, make_user
):
    server = live_server_factory(CHAT_RATE_BURST="2", CHAT_RATE_PER_MINUTE="40")
    Room.objects.create(slug="lobby", title="Lobby")
    page = room_page(new_context(server, make_user("alice")))
    sent = [f"quick {n}" for n in range(1, 5)]
    for text in sent:
        write(page, text)
    # Over the burst (one more every 1.5 s, far slower than the page writes them), the server refuses
    # some, naming their client_id; the page keeps them and sends them again, in order.
    expect(page.locator("#messages li.message-failed")).not_to_have_count(0)
    expect(bodies(page)).to_have_text(sent, timeout=15_000)
    expect(page.locator("#messages li[data-client-id]")).to_have_count(0)
    expect(page.locator("#composer-error")).to_be_hidden()
    assert list(Message.objects.order_by("id").values_list("body", flat=True)) == sent

    # A message the server refuses for good goes back to the composer with the reason.
    page.evaluate("document.getElementById('composer-body').value = 'bad \\u0000 text'")
    page.locator("#composer-body").press("Enter")
    expect(page.locator("#composer-error")).to_contain_text("'body'")
    assert page.evaluate("document.getElementById('composer-body').value") == "bad \u0000 text"
    expect(page.locator("#messages li[data-client-id]")).to_have_count(0)
    assert page.evaluate("chatPage.pending()") == []
    assert page.errors == []


# Drops every chat.message frame a page sends, as a connection that never gets one through would.
DROP_CHAT_MESSAGES = """
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  if (String(data).includes('"chat.message"')) return;
  return send.call(this, data);
};
"""
UNSENT_KEYS = "Object.keys(localStorage).filter(key => key.startsWith(PresenceSite.DRAFTS_PREFIX))"


def room_page_that_cannot_send(context: BrowserContext) -> Page:
    page = context.new_page()
    page.add_init_script(DROP_CHAT_MESSAGES)
    page.goto("/chat/lobby/")
    expect(page.locator("html[data-connection=ok]")).to_have_count(1)
    return page


def test_an_unsent_message_survives_closing_the_page_and_a_logout_forgets_it(server, new_context, make_user):
    Room.objects.create(slug="lobby", title="Lobby")
    bob_page = room_page(new_context(server, make_user("bob")))
    alice = new_context(server, make_user("alice"))

    first = room_page_that_cannot_send(alice)
    write(first, "written before the lid closed")
    expect(first.locator("#messages li[data-client-id]")).to_contain_text("sending…")
    first.close()
    assert not Message.objects.exists()

    # The next page of the room shows it, sends it (same client_id) and forgets it once stored.
    second = room_page(alice)
    expect(bodies(second)).to_have_text(["written before the lid closed"])
    expect(second.locator("#messages li[data-client-id]")).to_have_count(0)
    expect(bodies(bob_page)).to_have_text(["written before the lid closed"])
    assert list(Message.objects.values_list("body", flat=True)) == ["written before the lid closed"]
    assert second.evaluate(UNSENT_KEYS) == []
    second.close()

    third = room_page_that_cannot_send(alice)
    write(third, "never sent")
    expect(third.locator("#messages li[data-client-id]")).to_have_count(1)
    assert len(third.evaluate(UNSENT_KEYS)) == 1
    third.locator(".logout-form button").click()
    third.wait_for_url(lambda url: "/chat/" not in url)
    assert third.evaluate("Object.keys(localStorage)") == []
