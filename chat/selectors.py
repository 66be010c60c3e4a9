"""Chat reads. Every list is one query, whatever the number of rooms, messages or users."""

from typing import Any

from django.db.models import Count, F, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from chat import protocol
from chat.models import Message, MessageEdit, Reaction, Room, RoomChange
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
)


def rooms_readable_by(user) -> QuerySet[Room]:
    """The rooms this user may read: the one rule behind search, around= and edit history.

    Today every room is public; direct rooms (issue 13) narrow it here, and only here.
    """
    return Room.objects.all()


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
