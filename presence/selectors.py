"""Presence reads. Each list is one query, whatever the number of users."""

from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from presence.models import Connection, UserPresence
from presence.protocol import status_payload
from presence.services import status_of
from realtime.protocol import iso


def _shown_online() -> Q:
    live = Connection.objects.live().filter(user_id=OuterRef("user_id"))
    rows = Connection.objects.filter(user_id=OuterRef("user_id"))
    # No socket row at all while online_since is set: the last socket just
    # closed and the leave waits out its grace (a reload, a reconnect). No
    # leave was announced, so a snapshot must still list the user, or a
    # watcher that resyncs now never hears of them again. Only rows that
    # stopped beating (a dead process) take a user out before the sweep.
    # An invisible user is online in truth and offline to everyone else.
    return Q(online_since__isnull=False, invisible=False) & (Q(Exists(live)) | ~Q(Exists(rows)))


def _online() -> QuerySet[UserPresence]:
    return UserPresence.objects.filter(_shown_online())


_STATUS_FIELDS = ("status_text", "status_emoji", "status_expires_at", "dnd")


def _status(row: dict[str, Any], now) -> dict[str, Any] | None:
    presence = UserPresence(**{field: row[field] for field in _STATUS_FIELDS})
    return status_payload(status_of(presence, now=now))


def presence_online_users() -> list[dict[str, Any]]:
    """Users shown online, by name: [{"username", "online", "since", "idle", "away_since", "status"}]."""
    active = Connection.objects.live().filter(user_id=OuterRef("user_id"), idle=False)
    rows = (
        _online()
        .annotate(active=Exists(active))
        .order_by("user__username")
        .values("user__username", "online_since", "active", "away_since", *_STATUS_FIELDS)
    )
    now = timezone.now()
    return [
        {
            "username": row["user__username"],
            "online": True,
            "since": iso(row["online_since"]),
            "idle": not row["active"],
            "away_since": iso(row["away_since"]) if not row["active"] else None,
            "status": _status(row, now),
        }
        for row in rows
    ]


def presence_online_count() -> int:
    return _online().count()


def presence_recently_seen(*, limit: int | None = None) -> list[dict[str, Any]]:
    """Users shown offline, most recently seen first: [{"username", "online", "last_seen", "status"}]."""
    limit = settings.PRESENCE_RECENT_LIMIT if limit is None else limit
    rows = (
        UserPresence.objects.filter(last_seen__isnull=False)
        .exclude(_shown_online())
        .order_by("-last_seen")
        .values("user__username", "last_seen", *_STATUS_FIELDS)[:limit]
    )
    now = timezone.now()
    return [
        {
            "username": row["user__username"],
            "online": False,
            "last_seen": iso(row["last_seen"]),
            "status": _status(row, now),
        }
        for row in rows
    ]


def presence_of(*, user_id: int) -> dict[str, Any]:
    """A user's own view of themselves: {"status", "invisible"} (the page's header and status menu)."""
    presence = UserPresence.objects.filter(user_id=user_id).first() or UserPresence(user_id=user_id)
    return {"status": status_payload(status_of(presence)), "invisible": presence.invisible}
