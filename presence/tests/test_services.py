from datetime import timedelta

import pytest
from django.utils import timezone

from presence.models import Connection, UserPresence
from presence.services import (
    Join,
    Leave,
    SessionEnded,
    connection_close,
    connection_heartbeat,
    connection_open,
    presence_settle,
    presence_sweep,
)
from presence_site.testing import session_cookie

pytestmark = pytest.mark.django_db


def open_(user, name: str, server: str = "host:1:a", **extra):
    return connection_open(user=user, channel_name=name, server=server, endpoint="presence", **extra)


def test_first_socket_joins_and_second_does_not(make_user):
    alice = make_user("alice")
    join = open_(alice, "c1")
    assert isinstance(join, Join) and join.username == "alice"
    assert open_(alice, "c2") is None
    assert UserPresence.objects.get(user=alice).online_since == join.since


def test_leave_only_after_the_last_socket(make_user):
    alice = make_user("alice")
    open_(alice, "c1")
    open_(alice, "c2")
    assert connection_close(channel_name="c1") is None
    assert connection_close(channel_name="c2") == alice.pk
    leave = presence_settle(user_id=alice.pk)
    assert isinstance(leave, Leave) and leave.username == "alice"
    assert presence_settle(user_id=alice.pk) is None  # once only
    presence = UserPresence.objects.get(user=alice)
    assert presence.online_since is None and presence.last_seen == leave.last_seen


def test_reopen_within_grace_is_no_new_join_and_settle_finds_the_user_online(make_user):
    alice = make_user("alice")
    open_(alice, "c1")
    assert connection_close(channel_name="c1") == alice.pk
    assert open_(alice, "c2") is None
    assert presence_settle(user_id=alice.pk) is None


def test_closing_an_unknown_socket_is_harmless():
    assert connection_close(channel_name="never-opened") is None


def test_socket_of_a_deleted_session_is_refused(make_user):
    alice = make_user("alice")
    client, key = session_cookie(alice)
    client.logout()
    with pytest.raises(SessionEnded):
        open_(alice, "c1", session_key=key)
    assert not Connection.objects.exists()


def test_sweep_drops_sockets_of_dead_processes_and_announces_each_user_once(make_user, settings):
    alice, bob = make_user("alice"), make_user("bob")
    open_(alice, "a1", server="dead:1:x")
    open_(alice, "a2", server="dead:1:x")
    open_(bob, "b1", server="live:2:y")
    open_(bob, "b2", server="dead:1:x")
    long_ago = timezone.now() - timedelta(seconds=settings.PRESENCE_TTL + 5)
    Connection.objects.filter(server="dead:1:x").update(heartbeat_at=long_ago)

    removed, leaves = presence_sweep()
    assert removed == 3
    assert [leave.username for leave in leaves] == ["alice"]
    assert leaves[0].last_seen == long_ago
    assert list(Connection.objects.values_list("channel_name", flat=True)) == ["b1"]
    assert presence_sweep() == (0, [])


def test_heartbeat_refreshes_only_its_own_process(make_user, settings):
    alice = make_user("alice")
    open_(alice, "a1", server="me")
    open_(alice, "a2", server="other")
    long_ago = timezone.now() - timedelta(seconds=settings.PRESENCE_TTL + 5)
    Connection.objects.update(heartbeat_at=long_ago)
    assert connection_heartbeat(server="me") == 1
    removed, leaves = presence_sweep()
    assert removed == 1 and leaves == []


def test_sweep_settles_a_leave_left_pending_by_a_dead_process(make_user, settings):
    settings.PRESENCE_LEAVE_GRACE = 1
    alice = make_user("alice")
    open_(alice, "a1")
    connection_close(channel_name="a1")  # the process died before its grace ran out
    assert presence_sweep() == (0, [])  # still within the grace
    # Then a heartbeat interval more, the closing process's time to settle it.
    UserPresence.objects.filter(user=alice).update(last_seen=timezone.now() - timedelta(seconds=1.1))
    assert presence_sweep() == (0, [])
    overdue = settings.PRESENCE_LEAVE_GRACE + settings.PRESENCE_HEARTBEAT_INTERVAL + 0.1
    UserPresence.objects.filter(user=alice).update(last_seen=timezone.now() - timedelta(seconds=overdue))
    removed, leaves = presence_sweep()
    assert [leave.username for leave in leaves] == ["alice"]
