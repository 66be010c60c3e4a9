"""Presence reads. Each list is one query, whatever the number of users."""

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from presence.models import Connection, UserPresence
from presence.protocol import iso


def _live_connections(**filters: Any) -> QuerySet[Connection]:
    cutoff = timezone.now() - timedelta(seconds=settings.PRESENCE_TTL)
    return Connection.objects.filter(heartbeat_at__gte=cutoff, **filters)


def _online() -> QuerySet[UserPresence]:
    live = _live_connections(user_id=OuterRef("user_id"))
    return UserPresence.objects.filter(Exists(live), online_since__isnull=False)


def presence_online_users() -> list[dict[str, Any]]:
    """Users with a live socket, by name: [{"username", "online", "since", "idle"}]."""
    active = _live_connections(user_id=OuterRef("user_id"), idle=False)
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
    live = _live_connections(user_id=OuterRef("user_id"))
    rows = (
        UserPresence.objects.filter(last_seen__isnull=False)
        .filter(Q(online_since__isnull=True) | ~Exists(live))
        .order_by("-last_seen")
        .values_list("user__username", "last_seen")[:limit]
    )
    return [{"username": username, "online": False, "last_seen": iso(seen)} for username, seen in rows]


def presence_is_idle(*, user_id: int) -> bool:
    """True when the user has live sockets and every one of them is idle."""
    live = _live_connections(user_id=user_id)
    return live.exists() and not live.filter(idle=False).exists()
