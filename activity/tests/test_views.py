"""/admin/activity/ through Django's test client: who may see it, what it shows, its CSV, and bad input."""

import csv
import io
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from activity.models import OnlineSample, UserSeenDay
from activity.selectors import active_users_per_day, messages_per_room_day
from activity.services import activity_roll_up
from activity.tests.test_services import go_online, post
from presence.models import UserPresence

pytestmark = pytest.mark.django_db

URL = "/admin/activity/"


@pytest.fixture
def staff(make_user) -> Client:
    client = Client()
    client.force_login(make_user("mod", is_staff=True))
    return client


@pytest.fixture
def history(make_user, make_room):
    """Three days of a small site: messages in two rooms, users seen, a sample a minute for the last hour."""
    alice, bob = make_user("alice"), make_user("bob")
    lobby, dev = make_room("lobby"), make_room("dev")
    post(lobby, alice, days_ago=2, count=3)
    post(dev, bob, days_ago=1, count=2)
    today = timezone.localdate()
    UserSeenDay.objects.create(day=today - timedelta(days=2), user=alice)
    UserSeenDay.objects.create(day=today - timedelta(days=1), user=alice)
    UserSeenDay.objects.create(day=today - timedelta(days=1), user=bob)
    activity_roll_up()
    post(lobby, alice, count=4)  # today, counted from the messages themselves
    post(dev, bob)
    go_online(alice)
    UserPresence.objects.create(user=make_user("carol"), last_seen=timezone.now())
    now = timezone.now().replace(second=0, microsecond=0)
    OnlineSample.objects.bulk_create(
        OnlineSample(taken_at=now - timedelta(minutes=m), online=1 + m % 3) for m in range(60)
    )
    return {"lobby": lobby, "dev": dev}


def rows(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(response.content.decode())))


@pytest.mark.parametrize("who", ["anonymous", "member"])
def test_only_staff_see_it_others_get_the_admin_log_in(client, make_user, who):
    if who == "member":
        client.force_login(make_user("alice"))
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={URL}"


def test_the_admin_index_links_to_it(staff):
    assert f'<a href="{URL}"' in staff.get("/admin/").content.decode()


def test_staff_see_todays_figures_and_three_charts(staff, history):
    html = staff.get(URL).content.decode()
    assert '<li class="activity-figure" id="figure-online-now"><span class="value">1</span>' in html
    assert '<li class="activity-figure" id="figure-online-peak"><span class="value">3</span>' in html
    assert '<li class="activity-figure" id="figure-messages-today"><span class="value">5</span>' in html
    # alice is online, carol was seen today: bob was not.
    assert '<li class="activity-figure" id="figure-active-today"><span class="value">2</span>' in html
    for chart in ("online-chart", "messages-chart", "active-chart"):
        assert f'<svg class="chart" id="{chart}" role="img"' in html
    # Messages: lobby and dev today, lobby two days ago, dev yesterday; active users: those three days.
    assert html.count('<rect class="bar series-') - html.count('<rect class="bar series-total"') == 4
    assert html.count('<rect class="bar series-total"') == 3
    assert "<title>lobby, " in html and ": 4 messages</title>" in html


def test_the_page_costs_the_same_queries_whatever_the_history(
    staff, history, make_room, make_user, django_assert_num_queries
):
    staff.get(URL)
    # session, user, the user's two permission lists (the admin's sidebar), online count, samples,
    # rooms' roll-ups, last roll-up, today's messages, days' roll-ups, days not rolled up, today's users
    with django_assert_num_queries(12):
        staff.get(URL + "?range=30d")
    author = make_user("dave")
    for n in range(20):
        post(make_room(f"room-{n}"), author, days_ago=n % 5, count=3)
    activity_roll_up()
    with django_assert_num_queries(12):
        assert staff.get(URL + "?range=30d").status_code == 200


@pytest.mark.parametrize("span", ["24h", "7d", "30d"])
def test_each_span_renders(staff, history, span):
    response = staff.get(URL, {"range": span})
    assert response.status_code == 200
    assert f'<a href="?range={span}" aria-current="page">' in response.content.decode()


def test_the_online_csv_has_every_minute(staff, history):
    response = staff.get(URL, {"range": "24h", "format": "csv", "series": "online"})
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert 'filename="activity-online-24h.csv"' in response["Content-Disposition"]
    table = rows(response)
    assert table[0] == ["minute", "online"] and len(table) == 61
    assert table[-1][1] == "1"


def test_the_messages_csv_has_each_room_each_day(staff, history):
    table = rows(staff.get(URL, {"range": "7d", "format": "csv", "series": "messages"}))
    today = timezone.localdate()
    days_ago = {(today - timezone.datetime.fromisoformat(day).date()).days: (room, n) for day, room, n in table[1:3]}
    assert table[0] == ["day", "room", "messages"]
    assert days_ago == {2: ("lobby", "3"), 1: ("dev", "2")}
    assert table[3:] == [[today.isoformat(), "dev", "1"], [today.isoformat(), "lobby", "4"]]


def test_the_active_users_csv_has_a_row_for_each_day(staff, history):
    table = rows(staff.get(URL, {"range": "30d", "format": "csv", "series": "active"}))
    assert table[0] == ["day", "active_users"] and len(table) == 31
    assert [n for _, n in table[-3:]] == ["1", "2", "2"]


@pytest.mark.parametrize(
    "query, message",
    [
        ({"range": "1y"}, "'range' must be one of 24h, 7d, 30d; got '1y'."),
        ({"range": ""}, "'range' must be one of 24h, 7d, 30d; got ''."),
        ({"format": "xlsx"}, "'format' must be one of html, csv; got 'xlsx'."),
        ({"format": "csv"}, "'series' must be one of online, messages, active; got None."),
        ({"format": "csv", "series": "secrets"}, "'series' must be one of online, messages, active; got 'secrets'."),
        ({"range": "<b>x</b>"}, "got '&lt;b&gt;x&lt;/b&gt;'."),
    ],
)
def test_bad_input_is_a_400_that_says_what_is_allowed(staff, query, message):
    response = staff.get(URL, query)
    assert response.status_code == 400
    assert message.replace("'", "&#x27;") in response.content.decode()


def test_days_not_yet_rolled_up_are_counted_from_the_messages(make_user, make_room):
    alice, lobby = make_user("alice"), make_room("lobby")
    today = timezone.localdate()
    post(lobby, alice, days_ago=3)
    activity_roll_up(today=today - timedelta(days=2))  # the roll-up stopped two days ago
    post(lobby, alice, days_ago=1, count=2)
    post(lobby, alice, count=3)
    UserSeenDay.objects.create(day=today - timedelta(days=1), user=alice)
    counts = messages_per_room_day(first=today - timedelta(days=6), today=today)
    assert {(today - day).days: rooms["lobby"] for day, rooms in counts.items()} == {3: 1, 1: 2, 0: 3}
    active = active_users_per_day(first=today - timedelta(days=6), today=today)
    assert active[today - timedelta(days=1)] == 1 and active[today] == 0
