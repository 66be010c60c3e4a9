"""Chat reads. Every list is one query, whatever the number of rooms, messages or users."""

from typing import Any

from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from chat import protocol
from chat.models import DeletedMessage, Message, Room
from presence.models import Connection, UserPresence
from presence.protocol import status_payload
from presence.services import status_of

MESSAGE_FIELDS = ("id", "room__slug", "author__username", "body", "sent_at", "client_id")


def _live_chat_connections() -> QuerySet[Connection]:
    return Connection.objects.live().filter(endpoint=protocol.ENDPOINT)


def room_by_slug(*, slug: str) -> Room | None:
    return Room.objects.filter(slug=slug).first()


def room_list() -> list[dict[str, Any]]:
    """Every room with how many people are in it now: [{"slug", "title", "present"}]."""
    present = (
        _live_chat_connections()
        .filter(topic=OuterRef("slug"))
        .order_by()
        .values("topic")
        .annotate(n=Count("user_id", distinct=True))
        .values("n")
    )
    rows = Room.objects.annotate(present=Coalesce(Subquery(present, output_field=IntegerField()), Value(0))).values(
        "slug", "title", "present"
    )
    return list(rows.order_by("slug"))


def _present(slug: str) -> QuerySet[Connection]:
    # An invisible user is in the room in truth, and in nobody's list.
    return _live_chat_connections().filter(topic=slug).exclude(user__presence__invisible=True)


def room_presence(*, slug: str) -> list[str]:
    """The usernames shown in a room (a live socket there, not invisible), each once, sorted."""
    return list(_present(slug).order_by("user__username").values_list("user__username", flat=True).distinct())


def room_presence_statuses(*, slug: str) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """room_presence(), and the status of each of them who has one: one query."""
    rows = (
        _present(slug)
        .order_by("user__username")
        .values_list(
            "user__username",
            "user__presence__status_text",
            "user__presence__status_emoji",
            "user__presence__status_expires_at",
            "user__presence__dnd",
        )
        .distinct()
    )
    names, statuses = [], {}
    now = timezone.now()
    for username, text, emoji, expires_at, dnd in rows:
        names.append(username)
        presence = UserPresence(
            status_text=text or "", status_emoji=emoji or "", status_expires_at=expires_at, dnd=bool(dnd)
        )
        status = status_payload(status_of(presence, now=now))
        if status is not None:
            statuses[username] = status
    return names, statuses


def rooms_of_user_here(*, user_id: int) -> list[str]:
    """The rooms in which a user has a live socket now."""
    return list(_live_chat_connections().filter(user_id=user_id).values_list("topic", flat=True).distinct())


def _frames(rows) -> list[dict[str, Any]]:
    return [protocol.message_frame(row) for row in rows]


def room_history(
    *, room: Room, before: int | None = None, limit: int = protocol.HISTORY_LIMIT
) -> tuple[list[dict[str, Any]], bool]:
    """The last `limit` messages (before an id, if given), oldest first, and whether older ones exist."""
    rows = Message.objects.filter(room=room)
    if before is not None:
        rows = rows.filter(id__lt=before)
    # One row past the page says whether there is more, without a count.
    page = list(rows.order_by("-id").values(*MESSAGE_FIELDS)[: limit + 1])
    has_more = len(page) > limit
    return _frames(reversed(page[:limit])), has_more


def room_messages_after(
    *, room: Room, after: int, limit: int = protocol.RESUME_LIMIT
) -> tuple[list[dict[str, Any]], bool]:
    """The messages after an id, oldest first, at most `limit`, and whether more follow."""
    page = list(Message.objects.filter(room=room, id__gt=after).order_by("id").values(*MESSAGE_FIELDS)[: limit + 1])
    return _frames(page[:limit]), len(page) > limit


def room_deleted_recently(*, room: Room, limit: int = protocol.RESUME_LIMIT) -> list[int]:
    """Ids of the room's messages deleted within CHAT_DELETED_KEEP, the newest `limit`, in order."""
    ids = (
        DeletedMessage.objects.kept()
        .filter(room=room)
        .order_by("-message_id")
        .values_list("message_id", flat=True)[:limit]
    )
    return sorted(ids)
