"""Rooms people live in, in a real Chromium against live Daphne processes: counts, read markers, mentions,
notifications, direct rooms and the phone.

Every wait is a Playwright expectation with a timeout; nothing sleeps.
"""

import re

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from chat.models import Message, Room
from chat.services import room_direct_open, room_enter
from chat.tests.test_browser import bodies, room_page, write
from presence.tests.test_browser import (  # noqa: F401  (fixtures shared with the presence page's tests)
    browser,
    live_env,
    new_context,
    online,
    presence_page,
    server,
    set_hidden,
)

pytestmark = [pytest.mark.browser, pytest.mark.live]

# Headless Chromium shows no notifications: this stands in for the browser's
# Notification, recording each one (and each permission request) in the page.
RECORD_NOTIFICATIONS = """
window.__notifications = [];
window.__permissionRequests = 0;
const NativeNotification = window.Notification;
window.Notification = class {
  constructor(title, options) {
    this.title = title;
    this.options = options || {};
    this.onclick = null;
    window.__notifications.push(this);
  }
  close() {}
  static get permission() { return NativeNotification.permission; }
  static requestPermission() {
    window.__permissionRequests += 1;
    return NativeNotification.requestPermission();
  }
};
"""
NOTIFICATIONS = "window.__notifications.map(n => [n.title, n.options.body])"


def my_room(page: Page, slug: str):
    """A room in the page's lists of the user's rooms (the sidebar of a room, the list on /chat/)."""
    return page.locator(f'[data-room-list] li[data-slug="{slug}"]')


def synced(page: Page) -> Page:
    expect(page.locator("html[data-rooms=live]")).to_have_count(1)
    return page


def test_counts_rise_while_another_room_gets_messages_and_fall_when_read_in_another_tab(server, new_context, make_user):
    general, random = (
        Room.objects.create(slug="general", title="General"),
        Room.objects.create(slug="random", title="random"),
    )
    alice, bob = make_user("alice"), make_user("bob")
    room_enter(slug="random", user=alice)
    alice_context = new_context(server, alice)
    in_general = synced(room_page(alice_context, general.slug))
    title = "#general · Presence"
    expect(in_general).to_have_title(title)
    expect(my_room(in_general, "random").locator(".badge")).to_have_count(0)

    bob_page = room_page(new_context(server, bob), random.slug)
    for text in ("morning all", "anyone seen the deploy notes?", "@alice you wrote them, right?", "never mind"):
        write(bob_page, text)
    expect(bodies(bob_page)).to_have_count(4)

    # Live in the sidebar of the room she is in, with the total in the title.
    entry = my_room(in_general, "random")
    expect(entry.locator(".badge-unread")).to_have_text("4")
    expect(entry.locator(".badge-mention")).to_have_text("@1")
    expect(entry.locator(".my-room-last")).to_have_text("bob: never mind")
    expect(in_general).to_have_title(f"(4) {title}")
    expect(my_room(in_general, "random")).to_have_count(1)
    expect(in_general.locator("[data-room-list] li").first).to_have_attribute("data-slug", "random")

    # Her other tab opens #random at the "New messages" line, the mention highlighted; reading it there
    # clears the counts in the first tab.
    in_random = room_page(alice_context, random.slug)
    divider = in_random.locator("#messages .unread-divider")
    expect(divider).to_have_text("New messages")
    expect(in_random.locator("#messages > li").first).to_have_class("unread-divider")
    mention = in_random.locator("#messages li.message-mention")
    expect(mention).to_have_count(1)
    expect(mention.locator(".mention-me")).to_have_text("@alice")
    expect(entry.locator(".badge")).to_have_count(0)
    expect(in_general).to_have_title(title)
    assert room_enter(slug="random", user=alice).last_read_id == Message.objects.latest("id").id

    # @ completes the names of the room's people; Enter takes the choice instead of sending.
    composer = in_random.locator("#composer-body")
    composer.press_sequentially("thanks @B")
    # The mention list's options (the header's status menu has options too).
    expect(in_random.locator("#mention-list").get_by_role("option")).to_have_text(["@bob"])
    composer.press("Enter")
    expect(composer).to_have_value("thanks @bob ")
    expect(in_random.locator("#mention-list")).to_be_hidden()
    composer.press("Enter")
    expect(my_room(in_general, "random").locator(".my-room-last")).to_have_text("alice: thanks @bob")
    assert in_general.errors == [] and in_random.errors == []


def test_a_mention_raises_a_notification_while_the_tab_is_hidden_that_opens_the_message(server, new_context, make_user):
    """Headless Chromium has no notification centre: the page's Notification is wrapped (RECORD_NOTIFICATIONS)
    and the tab is hidden by overriding document.hidden and visibilityState (set_hidden)."""
    random = Room.objects.create(slug="random", title="random")
    alice, bob = make_user("alice"), make_user("bob")
    room_enter(slug="random", user=alice)

    # Asked only from the button, never on page load.
    asking = new_context(server, alice)
    asking.add_init_script(RECORD_NOTIFICATIONS)
    rooms = asking.new_page()
    rooms.goto("/chat/")
    synced(rooms)
    assert rooms.evaluate("window.__permissionRequests") == 0
    rooms.get_by_role("button", name="Turn on notifications").click()
    assert rooms.evaluate("window.__permissionRequests") == 1
    asking.close()

    context = new_context(server, alice)
    context.grant_permissions(["notifications"], origin=server.http)
    context.add_init_script(RECORD_NOTIFICATIONS)
    page = context.new_page()
    page.goto("/")
    synced(page)
    title = "Who's online · Presence"
    bob_page = room_page(new_context(server, bob), random.slug)

    # The title counts; the notification comes in the same step, so each title says it has been decided.
    write(bob_page, "@alice seen while she looks")
    expect(page).to_have_title(f"(1) {title}")
    set_hidden(page, True)
    write(bob_page, "no mention, no notification")
    expect(page).to_have_title(f"(2) {title}")
    assert page.evaluate(NOTIFICATIONS) == []
    write(bob_page, "@alice can you look at this?")
    expect(page).to_have_title(f"(3) {title}")
    assert page.evaluate(NOTIFICATIONS) == [["bob in #random", "@alice can you look at this?"]]

    # Do-not-disturb (the presence status keeps body[data-dnd]): no notification.
    page.evaluate("document.body.dataset.dnd = '1'")
    write(bob_page, "@alice are you there?")
    expect(page).to_have_title(f"(4) {title}")
    assert len(page.evaluate(NOTIFICATIONS)) == 1

    # Clicking it opens the room at that message.
    mentioned = Message.objects.get(body="@alice can you look at this?")
    page.evaluate("window.__notifications[0].onclick()")
    expect(page).to_have_url(f"{server.http}/chat/random/#message-{mentioned.id}")
    target = page.locator(f"#message-{mentioned.id}")
    expect(target).to_have_class(re.compile(r"\bmessage-target\b"))
    expect(target).to_be_in_viewport()


def test_direct_messages_are_opened_from_a_name_and_invisible_to_anyone_else(server, new_context, make_user):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    Room.objects.create(slug="lobby", title="Lobby")
    room_enter(slug="lobby", user=carol)
    alice_rooms = new_context(server, alice).new_page()
    alice_rooms.goto("/chat/")
    synced(alice_rooms)
    carol_context = new_context(server, carol)
    carol_rooms = carol_context.new_page()
    carol_rooms.goto("/chat/")
    synced(carol_rooms)

    # Bob clicks alice's name on the presence page.
    bob_page = presence_page(new_context(server, bob))
    expect(online(bob_page, "alice")).to_be_visible()
    online(bob_page, "alice").get_by_role("link", name="alice").click()
    slug = room_direct_open(user=bob, other=alice).slug
    expect(bob_page).to_have_url(f"{server.http}/chat/{slug}/")
    expect(bob_page.locator("#room-heading")).to_have_text("alice")
    expect(bob_page.get_by_role("button", name="Leave")).to_have_count(0)
    expect(bob_page.locator("html[data-connection=ok]")).to_have_count(1)
    write(bob_page, "just between us")
    expect(bodies(bob_page)).to_have_text(["just between us"])

    # Alice's list shows it under bob's name, live.
    entry = my_room(alice_rooms, slug)
    expect(entry.locator(".my-room-title")).to_have_text("bob")
    expect(entry.locator(".badge-unread")).to_have_text("1")
    expect(entry.locator(".my-room-last")).to_have_text("bob: just between us")

    # Carol: not in her list, live or reloaded, nor her counts; its page, history and socket refuse her.
    expect(my_room(carol_rooms, "lobby")).to_have_count(1)
    expect(my_room(carol_rooms, slug)).to_have_count(0)
    carol_rooms.reload()
    synced(carol_rooms)
    expect(my_room(carol_rooms, slug)).to_have_count(0)
    assert "just between us" not in carol_rooms.content()
    assert carol_rooms.title() == "Chat rooms · Presence"
    response = carol_rooms.goto(f"/chat/{slug}/")
    assert response.status == 404
    expect(carol_rooms.locator("h1")).to_have_text(f"There is no room #{slug}")
    expect(carol_rooms.get_by_role("button", name=re.compile("Create"))).to_have_count(0)
    seen = carol_rooms.evaluate(
        """async slug => {
             const api = await (await fetch("/api/rooms")).json();
             const history = await fetch(`/chat/${slug}/messages`);
             const code = await new Promise(done => {
               const socket = new WebSocket(`ws://${location.host}/ws/chat/${slug}/`);
               socket.onclose = event => done(event.code);
             });
             return [api.rooms.map(room => room.slug), history.status, code];
           }""",
        slug,
    )
    assert seen == [["lobby"], 404, 4403]


def test_a_room_that_does_not_exist_offers_to_create_it(server, new_context, make_user):
    page = new_context(server, make_user("alice")).new_page()
    response = page.goto("/chat/genral/")
    assert response.status == 404
    assert not Room.objects.exists()
    page.get_by_role("button", name="Create #genral").click()
    expect(page).to_have_url(f"{server.http}/chat/genral/")
    expect(page.locator("#messages-empty")).to_have_text("No messages yet: write the first one.")
    write(page, "first!")
    expect(bodies(page)).to_have_text(["first!"])
    expect(page.locator("#messages-empty")).to_be_hidden()


def phone_room(context: BrowserContext, slug: str) -> Page:
    page = room_page(context, slug)
    expect(bodies(page)).to_have_count(50)
    return page


def in_view(page: Page, selector: str) -> bool:
    """Wholly within the window, as a person sees it (the window itself scrolled or not)."""
    return page.evaluate(
        """selector => {
             const box = document.querySelector(selector).getBoundingClientRect();
             return box.top >= 0 && box.bottom <= window.innerHeight && box.height > 0;
           }""",
        selector,
    )


def test_on_a_phone_a_room_opens_at_the_newest_message_with_the_composer_in_view(server, new_context, make_user):
    room = Room.objects.create(slug="lobby", title="Lobby")
    alice, bob = make_user("alice"), make_user("bob")
    Message.objects.bulk_create(
        Message(room=room, author=bob, body=f"message {n}\nwith a second line", client_id=f"c{n}") for n in range(80)
    )
    room_enter(slug="lobby", user=alice)  # everything there read
    context = new_context(server, alice, width=375, height=812)
    page = phone_room(context, "lobby")
    newest = page.locator("#messages li[data-id]").last
    expect(newest).to_contain_text("message 79")
    assert in_view(page, "#messages li[data-id]:last-child")
    assert in_view(page, "#composer-body")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    expect(page.locator(".unread-divider")).to_have_count(0)

    # The member list folds behind a button.
    expect(page.locator("#who-here")).to_be_hidden()
    page.get_by_role("button", name=re.compile("^Members")).click()
    expect(page.locator("#who-here")).to_be_visible()
    expect(page.locator("#here-list")).to_contain_text("alice")

    # With unread messages it opens at the "New messages" line instead, the composer still in view.
    Message.objects.bulk_create(Message(room=room, author=bob, body=f"new {n}", client_id=f"n{n}") for n in range(30))
    page = phone_room(context, "lobby")
    expect(page.locator(".unread-divider")).to_have_count(1)
    assert in_view(page, ".unread-divider")
    assert in_view(page, "#composer-body")
    expect(page.locator("#messages li[data-id]").last).not_to_be_in_viewport()
