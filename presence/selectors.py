"""Presence reads. Each list is one query, whatever the number of users."""

from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet

from presence.models import Connection, UserPresence
from realtime.protocol import iso


def _shown_online() -> Q:
    live = Connection.objects.live().filter(user_id=OuterRef("user_id"))
    rows = Connection.objects.filter(user_id=OuterRef("user_id"))
    # No socket row at all while online_since is set: the last socket just
    # closed and the leave waits out its grace (a reload, a reconnect). No
    # leave was announced, so a snapshot must still list the user, or a
    # watcher that resyncs now never hears of them again. Only rows that
    # stopped beating (a dead process) take a user out before the sweep.
    return Q(online_since__isnull=False) & (Q(Exists(live)) | ~Q(Exists(rows)))


def _online() -> QuerySet[UserPresence]:
    return UserPresence.objects.filter(_shown_online())


def presence_online_users() -> list[dict[str, Any]]:
    """Users with a live socket, by name: [{"username", "online", "since", "idle"}]."""
    active = Connection.objects.live().filter(user_id=OuterRef("user_id"), idle=False)
    rows = (
        _online()
        .annotate(active=Exists(active))
        .order_by("user__username")
        .values_list("user__username", "online_since", "active")
    )
    return [
        {"username": username, "online": True, "since": iso(since), "idle": not active}
        for username, since, active in rows
    ]


def presence_online_count() -> int:
    return _online().count()


def presence_recently_seen(*, limit: int | None = None) -> list[dict[str, Any]]:
    """Offline users, most recently seen first: [{"username", "online", "last_seen"}]."""
    limit = settings.PRESENCE_RECENT_LIMIT if limit is None else limit
    rows = (
        UserPresence.objects.filter(last_seen__isnull=False)
        .exclude(_shown_online())
        .order_by("-last_seen")
        .values_list("user__username", "last_seen")[:limit]
    )
    return [{"username": username, "online": False, "last_seen": iso(seen)} for username, seen in rows]
