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
from django.utils import timezone

from chat import protocol
from chat.models import Membership, Message, MessageEdit, Reaction, Room, RoomChange
from chat.search import messages_matching
from presence.models import Connection, UserPresence
from presence.protocol import status_payload
from presence.services import status_of

MESSAGE_FIELDS = (
    "id",
    "room__slug",
    "author__username",
    "body",
    "sent_at",
    "client_id",
    "html",
    "edited_at",
    "reaction_summary",
    "mentions",
)


def rooms_readable_by(user) -> QuerySet[Room]:
    """The rooms this user may read: the one rule behind search, around= and edit history.

    It is Room.objects.readable_by (every public room, and the user's direct rooms): the same rule
    as pages, sockets and counts.
    """
    return Room.objects.readable_by(user)


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


def _present(slug: str) -> QuerySet[Connection]:
    # An invisible user is in the room in truth, and in nobody's list.
    return _live_chat_connections().filter(topic=slug).exclude(user__presence__invisible=True)


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
        html="html",
        edited_at="edited_at",
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
                    "html": last["html"],
                    "edited_at": _stored_time(last["edited_at"]) if last["edited_at"] else None,
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


def room_newest_message(*, room: Room) -> dict[str, Any] | None:
    """The room's newest message as its frame (<message>), or None in an empty room."""
    frames = _frames(Message.objects.filter(room=room).order_by("-id").values(*MESSAGE_FIELDS)[:1])
    return frames[0] if frames else None


def room_member_names(*, room: Room, limit: int = 1000) -> list[str]:
    """Members' usernames, sorted, at most `limit`: what the composer completes after @."""
    return list(
        Membership.objects.filter(room=room).order_by("user__username").values_list("user__username", flat=True)[:limit]
    )


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


def message_reactions(message_ids) -> dict[int, list[dict[str, Any]]]:
    """The reactions of these messages from the Reaction rows, in one query: {id: [{"emoji", "users": [sorted]}]}.

    Each emoji once, first reacted first. What Message.reaction_summary is rewritten from.
    """
    by_message: dict[int, dict[str, list[str]]] = {}
    rows = (
        Reaction.objects.filter(message_id__in=list(message_ids))
        .order_by("id")
        .values_list("message_id", "emoji", "user__username")
    )
    for message_id, emoji, username in rows:
        by_message.setdefault(message_id, {}).setdefault(emoji, []).append(username)
    return {
        message_id: [{"emoji": emoji, "users": sorted(users)} for emoji, users in emojis.items()]
        for message_id, emojis in by_message.items()
    }


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


def room_history_cursor(*, room: Room) -> tuple[list[dict[str, Any]], bool, str]:
    """room_history() and the room's cursor, read in one statement (so they agree): what a socket opens with."""
    rows = Message.objects.filter(room=room).annotate(room_seq=F("room__change_seq"))
    page = list(rows.order_by("-id").values(*MESSAGE_FIELDS, "room_seq")[: protocol.HISTORY_LIMIT + 1])
    if not page:
        return [], False, room_cursor(room=room)
    cursor = protocol.cursor(room.pk, page[0]["room_seq"])
    return _frames(reversed(page[: protocol.HISTORY_LIMIT])), len(page) > protocol.HISTORY_LIMIT, cursor


def room_messages_after(
    *, room: Room, after: int, limit: int = protocol.RESUME_LIMIT
) -> tuple[list[dict[str, Any]], bool]:
    """The messages after an id, oldest first, at most `limit`, and whether more follow."""
    page = list(Message.objects.filter(room=room, id__gt=after).order_by("id").values(*MESSAGE_FIELDS)[: limit + 1])
    return _frames(page[:limit]), len(page) > limit


def room_deleted_recently(*, room: Room, limit: int = protocol.RESUME_LIMIT) -> list[int]:
    """Ids of the room's messages deleted within CHAT_DELETED_KEEP, the newest `limit`, in order."""
    ids = (
        RoomChange.objects.kept()
        .filter(room=room, kind=RoomChange.DELETED)
        .order_by("-message_id")
        .values_list("message_id", flat=True)[:limit]
    )
    return sorted(ids)


def room_cursor(*, room: Room) -> str:
    """The room's cursor now: read before the messages it goes with, so a race repeats a change, never loses one."""
    seq = Room.objects.filter(pk=room.pk).values_list("change_seq", flat=True).get()
    return protocol.cursor(room.pk, seq)


def room_resume(*, room: Room, cursor: str, limit: int = protocol.RESUME_LIMIT) -> dict[str, Any] | None:
    """What a client that saw the room up to `cursor` missed; None when the cursor is unknown or expired.

    {"messages": those posted since, oldest first, "changes": edits, deletions
    and reactions to older messages as their live frames, "cursor": the new
    one}. More than `limit` new messages is answered as expired: the client
    starts again from the last page.
    """
    parsed = protocol.cursor_parse(cursor)
    if parsed is None or parsed[0] != room.pk:
        return None
    seen = parsed[1]
    now_seq = Room.objects.filter(pk=room.pk).values_list("change_seq", flat=True).get()
    if seen > now_seq:
        return None
    changes = list(
        RoomChange.objects.filter(room=room, seq__gt=seen).order_by("seq").values_list("seq", "kind", "message_id")
    )
    # Seqs are contiguous: a missing seq+1 means it was pruned (older than CHAT_DELETED_KEEP).
    if seen < now_seq and (not changes or changes[0][0] != seen + 1):
        return None
    last = changes[-1][0] if changes else seen
    posted = [message_id for _, kind, message_id in changes if kind == RoomChange.POSTED]
    if len(posted) > limit:
        return None
    posted_set = set(posted)
    deleted = {message_id for _, kind, message_id in changes if kind == RoomChange.DELETED}
    edited, reacted = [], []
    for _, kind, message_id in changes:
        if message_id in posted_set or message_id in deleted:
            continue  # a new message comes as it is now; a deleted one only as its deletion
        target = edited if kind == RoomChange.EDITED else reacted if kind == RoomChange.REACTED else None
        if target is not None and message_id not in target:
            target.append(message_id)
    touched = set(posted) | set(edited) | set(reacted)
    rows = {row["id"]: row for row in Message.objects.filter(room=room, id__in=touched).values(*MESSAGE_FIELDS)}
    messages = [protocol.message_frame(rows[message_id]) for message_id in sorted(posted_set) if message_id in rows]
    frames = [protocol.deleted_frame(message_id, room.slug) for message_id in sorted(deleted)]
    frames += [protocol.edited_frame(room.slug, rows[message_id]) for message_id in edited if message_id in rows]
    frames += [
        protocol.reactions_frame(room.slug, message_id, rows[message_id]["reaction_summary"])
        for message_id in reacted
        if message_id in rows
    ]
    return {"messages": messages, "changes": frames, "cursor": protocol.cursor(room.pk, last)}


def room_messages_around(*, room: Room, message_id: int, limit: int) -> list[dict[str, Any]] | None:
    """Up to `limit` messages before one, it, and up to `limit` after, oldest first; None when it is not there."""
    rows = Message.objects.filter(room=room)
    if not rows.filter(id=message_id).exists():
        return None
    before = list(rows.filter(id__lt=message_id).order_by("-id").values(*MESSAGE_FIELDS)[:limit])
    after = list(rows.filter(id__gte=message_id).order_by("id").values(*MESSAGE_FIELDS)[: limit + 1])
    return _frames([*reversed(before), *after])


def room_messages_from_around(*, room: Room, message_id: int, context: int) -> tuple[list[dict[str, Any]], bool]:
    """A room page opened at a message: `context` messages before it through the newest (at most RESUME_LIMIT).

    Returns the messages, oldest first, and whether older ones exist.
    """
    rows = Message.objects.filter(room=room)
    start = rows.filter(id__lt=message_id).order_by("-id").values_list("id", flat=True)[context : context + 1]
    first = start[0] if start else 0
    page = list(rows.filter(id__gt=first).order_by("id").values(*MESSAGE_FIELDS)[: protocol.RESUME_LIMIT])
    return _frames(page), first > 0


def message_edits(*, message: Message) -> list[dict[str, Any]]:
    """Every earlier version of a message, oldest first (the first since its sent_at)."""
    rows = MessageEdit.objects.filter(message=message).order_by("id").values_list("body", "edited_at")
    return [protocol.edit_version(body, edited_at) for body, edited_at in rows]


def message_search(*, user, q: str, room: Room | None = None, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """Messages holding every word of q in the rooms the user may read (or one of them), newest first."""
    rows = messages_matching(q).filter(room__in=rooms_readable_by(user))
    if room is not None:
        rows = rows.filter(room=room)
    page = list(rows.order_by("-id").values(*MESSAGE_FIELDS)[: limit + 1])
    return _frames(page[:limit]), len(page) > limit
