from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from presence.models import Connection, UserPresence
from presence.selectors import presence_online_count, presence_online_users, presence_recently_seen

pytestmark = pytest.mark.django_db


def populate(online: int, offline: int) -> None:
    """Users with sockets (online) and users last seen a while ago, in bulk."""
    User = get_user_model()
    now = timezone.now()
    users = User.objects.bulk_create([User(username=f"user{i:05d}") for i in range(online + offline)])
    UserPresence.objects.bulk_create(
        [UserPresence(user=u, online_since=now) for u in users[:online]]
        + [UserPresence(user=u, last_seen=now - timedelta(minutes=i)) for i, u in enumerate(users[online:])]
    )
    Connection.objects.bulk_create(
        Connection(channel_name=f"c{u.pk}", user=u, server="s", endpoint="presence", opened_at=now, heartbeat_at=now)
        for u in users[:online]
    )


def test_online_list_is_one_query_whatever_the_number_of_users(django_assert_num_queries):
    populate(online=300, offline=50)
    with django_assert_num_queries(1):
        users = presence_online_users()
    assert len(users) == 300
    assert users[0] == {
        "username": "user00000",
        "online": True,
        "since": users[0]["since"],
        "idle": False,
        "away_since": None,
        "status": None,
    }
    with django_assert_num_queries(1):
        assert presence_online_count() == 300


def test_recently_seen_is_one_query_most_recent_first(django_assert_num_queries):
    populate(online=5, offline=30)
    with django_assert_num_queries(1):
        recent = presence_recently_seen(limit=10)
    assert [r["username"] for r in recent] == [f"user{i:05d}" for i in range(5, 15)]
    assert all(r["online"] is False and r["last_seen"].endswith("Z") for r in recent)


def test_users_with_only_stale_sockets_are_not_online(settings):
    populate(online=3, offline=0)
    stale = timezone.now() - timedelta(seconds=settings.PRESENCE_TTL + 1)
    Connection.objects.filter(user__username="user00001").update(heartbeat_at=stale)
    assert [u["username"] for u in presence_online_users()] == ["user00000", "user00002"]
    assert presence_online_count() == 2


def test_idle_only_when_every_socket_is_idle():
    populate(online=1, offline=0)
    user = get_user_model().objects.get()
    now = timezone.now()
    Connection.objects.create(
        channel_name="second", user=user, server="s", endpoint="presence", opened_at=now, heartbeat_at=now, idle=True
    )
    assert presence_online_users()[0]["idle"] is False
    Connection.objects.update(idle=True)
    assert presence_online_users()[0]["idle"] is True
