"""The admin's view in a real Chromium, against a live Daphne process: the dashboard, ending sessions, the log.

Every wait is a Playwright expectation with a timeout; nothing sleeps.
"""

import math
import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from activity.models import DayRollup, OnlineSample, RoomDayRollup
from chat.models import Room
from chat.services import message_post
from presence.tests.test_browser import presence_page

pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.django_db(transaction=True)]

# Keeps every close code a page's sockets see, with when, in sessionStorage: it outlives the page's
# own navigation to the log-in page within the tab.
RECORD_CLOSES = """
const Native = window.WebSocket;
window.WebSocket = function (...args) {
  const socket = new Native(...args);
  socket.addEventListener("close", (event) => {
    const seen = JSON.parse(sessionStorage.getItem("closes") || "[]");
    seen.push([event.code, Date.now()]);
    sessionStorage.setItem("closes", JSON.stringify(seen));
  });
  return socket;
};
Object.assign(window.WebSocket, Native);
window.WebSocket.prototype = Native.prototype;
"""


def figure(page: Page, key: str):
    return page.locator(f"#figure-{key} .value")


def a_week_behind(rooms: list[Room]) -> None:
    """A week of history as the housekeeping jobs leave it: a sample a minute, each closed day rolled up."""
    now = timezone.now().replace(second=0, microsecond=0)
    # A working-day wave: few at night, most in the afternoon.
    OnlineSample.objects.bulk_create(
        OnlineSample(taken_at=at, online=round(9 + 8 * math.sin((at.hour + at.minute / 60 - 9) * math.pi / 12)))
        for at in (now - timedelta(minutes=m) for m in range(1, 7 * 24 * 60))
    )
    today = timezone.localdate()
    for days_ago in range(1, 7):
        day = today - timedelta(days=days_ago)
        DayRollup.objects.create(day=day, active_users=14 + days_ago % 3 * 4, last_message_id=0)
        for n, room in enumerate(rooms):
            RoomDayRollup.objects.create(day=day, room=room, messages=(40 - 12 * n) + days_ago * 3)


def test_screenshots_of_the_dashboard_staff_see_with_todays_figures(
    live_server_factory, new_context, make_user, screenshot_dir
):
    # Staff reading the admin are online like anyone (the admin holds a socket): the default leave grace
    # keeps root online from the admin index to the dashboard.
    server = live_server_factory(PRESENCE_LEAVE_GRACE="1.5")
    alice, bob, root = make_user("alice"), make_user("bob"), make_user("root", is_staff=True, is_superuser=True)
    lobby = Room.objects.create(slug="lobby", title="Lobby")
    design = Room.objects.create(slug="design", title="Design")
    a_week_behind([lobby, design, Room.objects.create(slug="support", title="Support")])
    for room, user, body in [(lobby, alice, "morning"), (lobby, bob, "hi"), (design, alice, "new mock-ups")]:
        message_post(room=room, user=user, body=body)
    presence_page(new_context(server, alice))
    presence_page(new_context(server, bob))
    today = timezone.localdate().strftime("%a %d %b")

    for width, height, label in [(1280, 900, "desktop"), (375, 812, "phone")]:
        page = new_context(server, root, width=width, height=height).new_page()
        page.goto("/admin/")
        expect(page.locator("html[data-connection=ok]")).to_have_count(1)
        page.get_by_role("link", name="Users online, messages and active users over time").click()
        expect(page).to_have_url(f"{server.http}/admin/activity/")
        expect(figure(page, "online-now")).to_have_text("3")  # alice, bob and root himself
        expect(figure(page, "messages-today")).to_have_text("3")
        expect(figure(page, "active-today")).to_have_text("3")
        # Today's bar is lobby's two messages on design's one, above the week before.
        today_bars = page.locator("#messages-chart rect.bar title", has_text=today)
        expect(today_bars).to_have_text([f"lobby, {today}: 2 messages", f"design, {today}: 1 message"])
        expect(page.locator("#messages-chart rect.bar")).to_have_count(6 * 3 + 2)
        expect(page.locator(".chart-legend li")).to_have_count(3)
        expect(page.locator("#active-chart rect.bar title", has_text=today)).to_have_text(f"{today}: 3 active users")
        expect(page.locator("#online-chart path.line")).to_have_attribute("d", re.compile(r"^M\d"))
        column = page.locator("#content-main").bounding_box()["width"]
        for chart in ("online-chart", "messages-chart", "active-chart"):
            assert page.locator(f"#{chart}").bounding_box()["width"] >= column * 0.95  # the charts fill the column
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        page.screenshot(path=screenshot_dir / f"activity-{label}.png", full_page=True)

        page.get_by_role("link", name="30 days").click()
        expect(page).to_have_url(f"{server.http}/admin/activity/?range=30d")
        expect(page.locator("#messages-chart rect.bar title", has_text=today)).to_have_count(2)


def test_a_user_who_is_not_staff_is_sent_to_the_admin_log_in(server, new_context, make_user):
    page = presence_page(new_context(server, make_user("alice")))
    page.goto("/admin/activity/")
    expect(page).to_have_url(f"{server.http}/admin/login/?next=/admin/activity/")
    expect(page.locator(".errornote")).to_contain_text("not authorized to access this page")
    expect(page.locator("#figure-online-now")).to_have_count(0)


def test_end_all_sessions_closes_both_tabs_with_4000_and_the_audit_log_lists_it(server, new_context, make_user):
    bob, root = make_user("bob"), make_user("root", is_staff=True, is_superuser=True)
    bob_context = new_context(server, bob)
    bob_context.add_init_script(RECORD_CLOSES)
    tabs = [presence_page(bob_context), presence_page(bob_context)]

    admin = new_context(server, root).new_page()
    admin.goto("/admin/auth/user/")
    admin.locator("#result_list tr", has=admin.get_by_role("link", name="bob", exact=True)).locator(
        "input.action-select"
    ).check()
    admin.locator("select[name=action]").select_option(label="End all sessions")
    clicked_at = admin.evaluate("Date.now()")
    admin.get_by_role("button", name="Go").click()
    expect(admin.locator(".messagelist")).to_contain_text("Ended 1 session and closed 2 sockets of 1 user.")

    for tab in tabs:
        # The socket's 4000 sends the page to the log-in.
        expect(tab).to_have_url(re.compile(re.escape(server.http) + r"/accounts/login/\?next=(%2F|/)$"))
        expect(tab.get_by_role("button", name="Log in")).to_be_visible()
        closes = tab.evaluate("JSON.parse(sessionStorage.getItem('closes'))")
        assert [code for code, _ in closes] == [4000]
        assert closes[0][1] - clicked_at < 2000

    admin.goto("/admin/")
    admin.get_by_role("link", name="Audit log").click()
    row = admin.locator("#result_list tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("root")
    expect(row).to_contain_text("sessions ended")
    expect(row).to_contain_text("bob")
    expect(row).to_contain_text("1 session: ended by staff")
