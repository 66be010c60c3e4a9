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
    expect(alice_page.locator("#messages li.message")).to_have_count(1)  # the stored copy replaced the draft
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
    message_post(room=room, user=alice, body="earlier", client_id=None)
    history_seq = Room.objects.get(pk=room.pk).change_seq
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
    alice_page.on("dialog", lambda dialog: dialog.accept())
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
    # The reconnect resumed from the cursor the page was rendered with, not from anything seen live.
    urls = bob_page.evaluate("window.__sockets")
    assert all(url.endswith(f"/ws/chat/lobby/?cursor={room.pk}.{history_seq}") for url in urls), urls
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


# ---------- edits, reactions, formatting, search, resume by cursor ----------


def message_item(page: Page, text: str):
    return page.locator("#messages li[data-id]", has_text=text)


def test_edits_reactions_and_formatting_show_live_and_hostile_bodies_stay_inert(server, new_context, make_user):
    Room.objects.create(slug="lobby", title="Lobby")
    alice, bob = make_user("alice"), make_user("bob")
    alice_page = room_page(new_context(server, alice))
    alice_tab_two = room_page(new_context(server, alice))
    bob_page = room_page(new_context(server, bob))

    write(bob_page, "**bold** and https://example.com/a?b=1")
    write(bob_page, "```\ndef f():\n    return 1\n```")
    hostile = [
        "<script>window.__pwned=1</script>",
        '<img src=x onerror="window.__pwned=1">',
        "[click](javascript:window.__pwned=1)",
        "[data](data:text/html,<script>window.__pwned=1</script>)",
        '<a href="javascript:window.__pwned=1">x</a>',
        "&lt;b onmouseover=window.__pwned=1&gt;hover&lt;/b&gt; <b",
    ]
    for body in hostile:
        write(bob_page, body)
    expect(bodies(alice_page)).to_have_count(2 + len(hostile))

    first = message_item(alice_page, "bold and")
    expect(first.locator(".message-body strong")).to_have_text("bold")
    link = first.locator(".message-body a")
    expect(link).to_have_attribute("href", "https://example.com/a?b=1")
    expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
    expect(message_item(alice_page, "def f").locator("pre code")).to_have_text("def f():\n    return 1\n")
    for body, node in zip(hostile, bodies(alice_page).all()[2:], strict=True):
        expect(node).to_have_text(body.replace("&lt;", "<").replace("&gt;", ">"))
    # The bodies' links (authors' names are links too now: to a direct room, on this site).
    alice_page.locator("#messages .message-body a").last.hover()
    assert alice_page.locator("#messages script, #messages img, #messages [onerror], #messages b").count() == 0
    hrefs = alice_page.eval_on_selector_all("#messages .message-body a", "links => links.map(link => link.href)")
    assert all(href.startswith("https://") for href in hrefs), hrefs

    # Bob fixes his first message: alice's open page shows it, and "(edited)" opens the earlier version.
    message_item(bob_page, "bold and").get_by_role("button", name="Edit this message").click()
    editor = bob_page.locator(".message-editor textarea")
    editor.fill("**bolder** now")
    editor.press("Enter")
    fixed = message_item(alice_page, "bolder now")
    expect(fixed.locator(".message-body strong")).to_have_text("bolder")
    fixed.get_by_role("button", name="(edited)").click()
    expect(fixed.locator(".message-edits li")).to_have_count(1)
    expect(fixed.locator(".message-edits")).to_contain_text("**bold** and https://example.com/a?b=1")

    # A reaction from one of alice's tabs: the count changes live in bob's page and in her other tab.
    fixed.get_by_role("button", name="React to this message").click()
    fixed.get_by_role("button", name="React with 🎉").click()
    for page in (bob_page, alice_tab_two):
        chip = message_item(page, "bolder now").locator(".reaction")
        expect(chip).to_have_text("🎉 1")
        expect(chip).to_have_attribute("title", "alice")
    message_item(bob_page, "bolder now").locator(".reaction").click()
    expect(message_item(alice_tab_two, "bolder now").locator(".reaction")).to_have_text("🎉 2")
    expect(message_item(alice_tab_two, "bolder now").locator(".reaction")).to_have_attribute("title", "alice, bob")
    message_item(alice_tab_two, "bolder now").locator(".reaction").click()
    expect(message_item(bob_page, "bolder now").locator(".reaction")).to_have_text("🎉 1")

    for page in (alice_page, alice_tab_two, bob_page):
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert page.errors == []


def test_a_search_hit_opens_the_room_at_the_message(server, new_context, make_user):
    room = Room.objects.create(slug="lobby", title="Lobby")
    alice = make_user("alice")
    Message.objects.bulk_create(
        Message(room=room, author=alice, body=f"filler {n}", client_id=f"f{n}", html=f"<p>filler {n}</p>")
        for n in range(60)
    )
    target = message_post(room=room, user=alice, body="The quarterly <numbers> are in")[0]["id"]
    Message.objects.bulk_create(
        Message(room=room, author=alice, body=f"later {n}", client_id=f"l{n}", html=f"<p>later {n}</p>")
        for n in range(60)
    )
    page = new_context(server, alice).new_page()
    page.goto("/chat/")
    page.get_by_label("Search messages").fill("quarterly NUMBERS")
    page.get_by_label("Search messages").press("Enter")
    expect(page).to_have_url(re.compile(r"/chat/search/\?q=quarterly"))
    hit = page.locator(".search-result")
    expect(hit).to_have_count(1)
    expect(hit.locator("mark")).to_have_text(["quarterly", "numbers"])
    expect(hit.locator(".search-body")).to_have_text("The quarterly <numbers> are in")
    hit.locator("a").click()
    expect(page).to_have_url(re.compile(rf"/chat/lobby/\?around={target}"))
    opened = page.locator(f'#messages li[data-id="{target}"]')
    expect(opened).to_have_class(re.compile(r"\bmessage-highlight\b"))
    expect(opened).to_be_in_viewport()
    # The room is live from there: the newest messages are below it.
    expect(bodies(page).last).to_have_text("later 59")


def test_a_page_offline_while_bob_edited_and_reacted_shows_both_after_it_reconnects(
    live_server_factory, new_context, make_user
):
    first, second = live_server_factory(), live_server_factory()
    room = Room.objects.create(slug="lobby", title="Lobby")
    alice, bob = make_user("alice"), make_user("bob")
    message_post(room=room, user=bob, body="see you at 10")
    alice_page = room_page(new_context(first, alice))
    bob_page = room_page(new_context(second, bob))
    write(bob_page, "bring the slides")
    expect(bodies(alice_page)).to_have_text(["see you at 10", "bring the slides"])

    first.halt()
    expect(alice_page.locator("#conn-state")).to_have_text("Reconnecting…")
    message_item(bob_page, "see you at 10").get_by_role("button", name="Edit this message").click()
    bob_page.locator(".message-editor textarea").fill("see you at _11_")
    bob_page.locator(".message-editor textarea").press("Enter")
    expect(message_item(bob_page, "see you at 11")).to_have_count(1)
    slides = message_item(bob_page, "bring the slides")
    slides.get_by_role("button", name="React to this message").click()
    slides.get_by_role("button", name="React with 👍").click()
    expect(slides.locator(".reaction")).to_have_text("👍 1")

    first.start()
    expect(alice_page.locator("#conn-state")).to_have_text("Back online", timeout=15_000)
    expect(bodies(alice_page)).to_have_text(["see you at 11", "bring the slides"])
    expect(message_item(alice_page, "see you at 11").locator("em")).to_have_text("11")
    expect(message_item(alice_page, "see you at 11").get_by_role("button", name="(edited)")).to_be_visible()
    expect(message_item(alice_page, "bring the slides").locator(".reaction")).to_have_text("👍 1")
    assert alice_page.errors == [] and bob_page.errors == []


def test_deleting_asks_first_and_a_moderator_is_told_whose_message_it_is(server, new_context, make_user):
    room = Room.objects.create(slug="lobby", title="Lobby")
    alice, moderator = make_user("alice"), make_user("mod", is_staff=True)
    message_post(room=room, user=alice, body="first")
    message_post(room=room, user=alice, body="second, a minute later")
    page = room_page(new_context(server, moderator))
    # One author's messages within a few minutes are one group, under one day line.
    expect(page.locator("#messages .day-separator")).to_have_count(1)
    expect(page.locator("#messages li.message-grouped")).to_have_count(1)
    questions = []

    def answer(dialog) -> None:
        questions.append(dialog.message)
        dialog.dismiss() if len(questions) == 1 else dialog.accept()

    page.on("dialog", answer)
    delete = message_item(page, "first").get_by_role("button", name="Delete")
    delete.click()
    assert questions == ["Delete alice's message? Everyone in the room stops seeing it."]
    expect(bodies(page)).to_have_count(2)
    delete.click()
    expect(bodies(page)).to_have_text(["second, a minute later"])
