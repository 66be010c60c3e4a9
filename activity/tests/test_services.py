"""The lease, the minute sample, the daily roll-up and pruning."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from activity.jobs import HOUSEKEEPING_LEASE, housekeeping_round, sample_round
from activity.models import DayRollup, Lease, OnlineSample, RoomDayRollup, UserSeenDay
from activity.services import activity_prune, activity_roll_up, lease_take, online_sample_take
from chat.models import Message
from presence.models import Connection, UserPresence
from realtime.runtime import SERVER_ID

pytestmark = pytest.mark.django_db


def go_online(user) -> None:
    now = timezone.now()
    UserPresence.objects.update_or_create(user=user, defaults={"online_since": now})
    Connection.objects.create(
        channel_name=f"c{user.pk}", user=user, server="s", endpoint="presence", opened_at=now, heartbeat_at=now
    )


def post(room, author, *, days_ago: int = 0, count: int = 1) -> None:
    """Messages as if sent that many days ago (at noon, so that no day boundary is in doubt)."""
    sent_at = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=days_ago)
    for _ in range(count):
        message = Message.objects.create(room=room, author=author, body="hi", client_id=f"c{Message.objects.count()}")
        Message.objects.filter(pk=message.pk).update(sent_at=sent_at)


def test_one_process_holds_a_lease_until_it_lapses(settings):
    assert lease_take(name="job", holder="a", seconds=60)
    assert not lease_take(name="job", holder="b", seconds=60)
    assert lease_take(name="job", holder="a", seconds=60)  # the holder renews
    Lease.objects.filter(name="job").update(expires_at=timezone.now() - timedelta(seconds=1))
    assert lease_take(name="job", holder="b", seconds=60)
    assert not lease_take(name="job", holder="a", seconds=60)
    assert lease_take(name="other job", holder="a", seconds=60)


def test_the_minute_sample_counts_who_is_online_once_per_minute(make_user):
    go_online(make_user("alice"))
    go_online(make_user("bob"))
    now = timezone.now()
    assert online_sample_take(now=now) == 2
    assert online_sample_take(now=now.replace(second=59)) == 2
    assert list(OnlineSample.objects.values_list("taken_at", "online")) == [(now.replace(second=0, microsecond=0), 2)]


def test_users_seen_today_are_noted_once_whether_online_or_gone(make_user):
    go_online(make_user("alice"))
    UserPresence.objects.create(user=make_user("bob"), last_seen=timezone.now())
    UserPresence.objects.create(user=make_user("carol"), last_seen=timezone.now() - timedelta(days=2))
    online_sample_take()
    online_sample_take()
    today = timezone.localdate()
    assert sorted(UserSeenDay.objects.values_list("user__username", "day")) == [("alice", today), ("bob", today)]


def test_the_sample_costs_the_deployment_one_insert_a_minute(make_user):
    go_online(make_user("alice"))
    sample_round()  # alice is noted as seen today
    with CaptureQueriesContext(connection) as holder:
        assert sample_round() == 1
    Lease.objects.update(holder="another process")
    with CaptureQueriesContext(connection) as other:
        assert sample_round() is None
    inserts = [q["sql"] for q in holder.captured_queries if q["sql"].lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 1 and "activity_onlinesample" in inserts[0]
    assert not any(q["sql"].lstrip().upper().startswith("INSERT") for q in other.captured_queries)
    assert len(other.captured_queries) == 2  # the lease's UPDATE finds nothing to take; it exists


def test_closed_days_are_rolled_up_once_per_room_and_today_is_left_open(make_user, make_room):
    alice, bob = make_user("alice"), make_user("bob")
    lobby, dev = make_room("lobby"), make_room("dev")
    post(lobby, alice, days_ago=3, count=2)
    post(dev, bob, days_ago=3)
    post(lobby, bob, days_ago=1, count=4)
    post(lobby, alice, count=5)  # today
    today = timezone.localdate()
    for days_ago, user in [(3, alice), (3, bob), (1, bob)]:
        UserSeenDay.objects.create(day=today - timedelta(days=days_ago), user=user)
    UserSeenDay.objects.create(day=today, user=alice)

    assert activity_roll_up() == 30  # ACTIVITY_KEEP_DAYS closed days, most of them empty
    rooms = sorted((today - day).days for day in RoomDayRollup.objects.values_list("day", flat=True))
    assert rooms == [1, 3, 3]
    assert RoomDayRollup.objects.get(day=today - timedelta(days=1)).messages == 4
    active = dict(DayRollup.objects.values_list("day", "active_users"))
    assert active[today - timedelta(days=3)] == 2 and active[today - timedelta(days=1)] == 1
    assert active[today - timedelta(days=2)] == 0 and today not in active
    assert list(UserSeenDay.objects.values_list("day", flat=True)) == [today]
    last = DayRollup.objects.get(day=today - timedelta(days=1)).last_message_id
    assert last == Message.objects.filter(sent_at__lt=timezone.now().replace(hour=0)).order_by("-id").first().id
    assert activity_roll_up() == 0


def test_a_roll_up_after_days_away_counts_only_the_missing_days(make_user, make_room):
    alice, lobby = make_user("alice"), make_room("lobby")
    today = timezone.localdate()
    post(lobby, alice, days_ago=5)
    activity_roll_up(today=today - timedelta(days=2))
    post(lobby, alice, days_ago=2, count=3)
    assert activity_roll_up() == 2
    counts = {(today - day).days: n for day, n in RoomDayRollup.objects.values_list("day", "messages")}
    assert counts == {5: 1, 2: 3}


def test_pruning_keeps_only_activity_keep_days(settings):
    settings.ACTIVITY_KEEP_DAYS = 7
    now = timezone.now()
    for days_ago in (0, 6, 8):
        OnlineSample.objects.create(taken_at=now - timedelta(days=days_ago), online=1)
        DayRollup.objects.create(day=timezone.localdate() - timedelta(days=days_ago), active_users=1, last_message_id=0)
    assert activity_prune(now=now) == 2
    assert OnlineSample.objects.count() == 2 and DayRollup.objects.count() == 2


def test_housekeeping_clears_ended_sessions_and_runs_on_one_process_only(make_user):
    from accounts.models import LoggedInUser
    from accounts.services import logged_in_user_record

    logged_in_user_record(user=make_user("alice"), session_key="long-gone")
    Lease.objects.create(name=HOUSEKEEPING_LEASE, holder="another process", expires_at=timezone.now() + timedelta(1))
    assert housekeeping_round() is False
    assert LoggedInUser.objects.exists()
    Lease.objects.filter(name=HOUSEKEEPING_LEASE).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert housekeeping_round() is True
    assert not LoggedInUser.objects.exists()
    assert Lease.objects.get(name=HOUSEKEEPING_LEASE).holder == SERVER_ID
