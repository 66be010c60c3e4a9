"""Chat reads. Every list is one query, whatever the number of rooms, messages or users.

Who may read what is decided in one place, Room.objects.readable_by(user):
every read of a room, its messages or its counts starts from it or from the
user's own memberships.
"""

from datetime import UTC, datetime
from functools import cache
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import (
    Case,
    CharField,
    Count,
    Exists,
    F,
    IntegerField,
    JSONField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Concat, JSONObject

from chat import protocol
from chat.models import DeletedMessage, Membership, Message, Room
from presence.models import Connection

MESSAGE_FIELDS = ("id", "room__slug", "author__username", "body", "sent_at", "client_id", "mentions")


def _live_chat_connections() -> QuerySet[Connection]:
    return Connection.objects.live().filter(endpoint=protocol.ENDPOINT)


def room_readable(*, slug: str, user: AbstractBaseUser) -> Room | None:
    """The room with this slug if the user may read it; None for a missing room and a direct room of others alike."""
    return Room.objects.readable_by(user).filter(slug=slug).first()


def membership_marker(*, room: Room, user: AbstractBaseUser) -> int | None:
    """The user's read marker in a room (0: nothing read), or None when they are not a member."""
    return Membership.objects.filter(room=room, user_id=user.pk).values_list("last_read_id", flat=True).first()


def room_list(*, user: AbstractBaseUser) -> list[dict[str, Any]]:
    """The public rooms a user is not in, with how many people are in each now: [{"slug", "title", "present"}]."""
    present = (
        _live_chat_connections()
        .filter(topic=OuterRef("slug"))
        .order_by()
        .values("topic")
        .annotate(n=Count("user_id", distinct=True))
        .values("n")
    )
    mine = Membership.objects.filter(room_id=OuterRef("pk"), user_id=user.pk)
    rows = (
        Room.objects.readable_by(user)
        .filter(kind=protocol.KIND_PUBLIC)
        .exclude(Exists(mine))
        .annotate(present=Coalesce(Subquery(present, output_field=IntegerField()), Value(0)))
        .values("slug", "title", "present")
    )
    return list(rows.order_by("slug"))


class _CountOf(Subquery):
    """COUNT(*) of the rows of a correlated subquery (sliced to cap the count): always a number, 0 for none."""

    template = "(SELECT COUNT(*) FROM (%(subquery)s) counted)"
    output_field = IntegerField()


def _counted(rows: QuerySet) -> _CountOf:
    """How many rows, up to protocol.COUNT_MAX.

    The cap bounds the work of a room left unread for long (counting walks the
    index from the marker), and the LIMIT tells the planner that each count is
    a short index walk, however far the markers are from the end.
    """
    return _CountOf(rows.order_by().values("id")[: protocol.COUNT_MAX])


def _unread_messages() -> QuerySet[Message]:
    """The messages a membership row has not read: after its marker, not its user's own (deleted ones are gone).

    A range on the (room, id) index from the marker: the work is the unread
    messages themselves, never the room's whole history.
    """
    return Message.objects.filter(room_id=OuterRef("room_id"), id__gt=OuterRef("last_read_id")).exclude(
        author_id=OuterRef("user_id")
    )


def _with_counts(memberships: QuerySet[Membership]) -> QuerySet[Membership]:
    """Membership rows with their unread and mentions counts, and, for a direct room, the other member's name."""
    mentioned = Concat(Value(" "), OuterRef("user__username"), Value(" "), output_field=CharField())
    other = (
        Membership.objects.filter(room_id=OuterRef("room_id"))
        .exclude(user_id=OuterRef("user_id"))
        .order_by("user_id")
        .values("user__username")[:1]
    )
    return memberships.annotate(
        unread=_counted(_unread_messages()),
        # "<> ''" lets the planner use the partial index of messages that mention anyone.
        mentions=_counted(_unread_messages().exclude(mentions="").filter(mentions__contains=mentioned)),
        other_name=Case(
            When(room__kind=protocol.KIND_DIRECT, then=Subquery(other)),
            default=Value(""),
            output_field=CharField(),
        ),
    )


def _title(row: dict[str, Any]) -> str:
    # A direct room is shown as the other person.
    if row["room__kind"] == protocol.KIND_DIRECT:
        return row["other_name"] or row["room__title"]
    return row["room__title"]


def _newest_message() -> Subquery:
    """A membership's room's newest message as one JSON object: one step back along the (room, id) index."""
    newest = Message.objects.filter(room_id=OuterRef("room_id")).order_by("-id")
    fields = JSONObject(
        id="id",
        username="author__username",
        body="body",
        sent_at="sent_at",
        client_id="client_id",
        mentions="mentions",
    )
    return Subquery(newest.values(json=fields)[:1], output_field=JSONField())


def _stored_time(value: str) -> datetime:
    # A time inside a JSON object comes back as text: ISO 8601 with an offset from
    # PostgreSQL, naive UTC ("2026-01-01 12:00:00.123456") from SQLite.
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@cache
def _rooms_listed() -> QuerySet:
    """rooms_of_user_rows() for any user: built once per process, since its expressions take longer to build
    than the query takes to run (2 to 3 ms against 0.04 ms to copy)."""
    newest_id = Message.objects.filter(room_id=OuterRef("room_id")).order_by("-id").values("id")[:1]
    return (
        _with_counts(Membership.objects.all())
        .annotate(last_id=Subquery(newest_id), last=_newest_message())
        .order_by(F("last_id").desc(nulls_last=True), "-joined_at", "-room_id")
        .values("room__slug", "room__title", "room__kind", "other_name", "unread", "mentions", "last_read_id", "last")
    )


def rooms_of_user_rows(*, user: AbstractBaseUser) -> QuerySet:
    """The one query of rooms_of_user(): the user's memberships with counts and newest message, newest first.

    Ids grow with time across rooms, so the newest message's id orders the
    rooms by their latest activity; rooms without one come last, newest joined first.
    """
    return _rooms_listed().filter(user_id=user.pk)


def rooms_of_user(*, user: AbstractBaseUser) -> list[dict[str, Any]]:
    """The user's rooms, most recent activity first: [{"slug", "title", "kind", "unread", "mentions", "last_read",
    "last_message": <message> | None}], in one query.
    """
    rooms = []
    for row in rooms_of_user_rows(user=user):
        last = row["last"]
        if last is not None:
            last = protocol.message_frame(
                {
                    "id": last["id"],
                    "room__slug": row["room__slug"],
                    "author__username": last["username"],
                    "body": last["body"],
                    "sent_at": _stored_time(last["sent_at"]),
                    "client_id": last["client_id"],
                    "mentions": last["mentions"],
                }
            )
        rooms.append(
            {
                "slug": row["room__slug"],
                "title": _title(row),
                "kind": row["room__kind"],
                "unread": row["unread"],
                "mentions": row["mentions"],
                "last_read": row["last_read_id"] or None,
                "last_message": last,
            }
        )
    return rooms


def room_counts(*, room: Room, user: AbstractBaseUser) -> tuple[int, int]:
    """One member's (unread, mentions) in one room; (0, 0) for a non-member."""
    row = _with_counts(Membership.objects.filter(room=room, user_id=user.pk)).values_list("unread", "mentions").first()
    return row or (0, 0)


def room_activity_members(*, room: Room) -> list[dict[str, Any]]:
    """The members of a room who should hear of its new messages, with their counts and sockets, in two queries.

    Those with a live socket anywhere but this room, and those sockets: a
    socket in the room gets the messages themselves, and a member with no
    socket reads the counts when a page opens.
    [{"user_id", "title", "unread", "mentions", "last_read", "sockets": [address, ...]}]
    """
    member = Membership.objects.filter(room=room, user_id=OuterRef("user_id"))
    sockets: dict[int, list[str]] = {}
    rows = (
        Connection.objects.live()
        .filter(Exists(member))
        .exclude(Q(endpoint=protocol.ENDPOINT) & Q(topic=room.slug))
        .order_by("channel_name")
        .values_list("user_id", "channel_name")
    )
    for user_id, address in rows:
        sockets.setdefault(user_id, []).append(address)
    if not sockets:
        return []
    counted = (
        _with_counts(Membership.objects.filter(room=room, user_id__in=list(sockets)))
        .order_by("user_id")
        .values("user_id", "room__kind", "room__title", "other_name", "unread", "mentions", "last_read_id")
    )
    return [
        {
            "user_id": row["user_id"],
            "title": _title(row),
            "unread": row["unread"],
            "mentions": row["mentions"],
            "last_read": row["last_read_id"],
            "sockets": sockets[row["user_id"]],
        }
        for row in counted
    ]


def room_member_names(*, room: Room, limit: int = 1000) -> list[str]:
    """Members' usernames, sorted, at most `limit`: what the composer completes after @."""
    return list(
        Membership.objects.filter(room=room).order_by("user__username").values_list("user__username", flat=True)[:limit]
    )


def room_presence(*, slug: str) -> list[str]:
    """The usernames with a live socket in a room, each once, sorted."""
    return list(
        _live_chat_connections()
        .filter(topic=slug)
        .order_by("user__username")
        .values_list("user__username", flat=True)
        .distinct()
    )


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
