"""Chat writes: rooms, membership and read markers, messages, moderation.

Broadcasts go out only after the data is committed.
"""

import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.text import slugify

from accounts.models import AuditEntry
from accounts.services import audit_record_many
from accounts.text import TextRefused, emoji_clean, text_clean
from chat import protocol
from chat.formatting import message_html
from chat.models import Membership, Message, MessageEdit, Reaction, Room, RoomChange
from chat.ratelimit import rate_take
from chat.selectors import MESSAGE_FIELDS, message_reactions, room_counts
from realtime import protocol as transport
from realtime.broadcast import broadcast_sync
from realtime.protocol import ProtocolError

logger = logging.getLogger(__name__)


def body_clean(body: Any) -> str:
    """The body to store, through the one text validator: trimmed, 1 to 2,000 code points; else ProtocolError."""
    try:
        return text_clean(body, max_chars=protocol.BODY_MAX_CHARS, field="body")
    except TextRefused as refused:
        raise ProtocolError(transport.INVALID, str(refused)) from None


def client_id_clean(client_id: Any) -> str:
    """The client's id for a message, or a fresh one when it sent none."""
    if client_id is None:
        return uuid.uuid4().hex
    if not protocol.client_id_is_valid(client_id):
        raise ProtocolError(
            transport.INVALID, f"'client_id' must be 1 to {protocol.CLIENT_ID_MAX_CHARS} of A-Z a-z 0-9 . _ : -"
        )
    return client_id


# @name where a name may start: not inside a word or an e-mail address. Django
# usernames are letters, digits and @ . + - _.
_MENTION = re.compile(r"(?<![\w.@+-])@([\w.@+-]{1,150})")
# The names looked up for one message, at most (a body of 2,000 characters could hold 1,000).
MENTIONS_MAX = 50


def mentions_find(*, body: str, room: Room) -> set[str]:
    """The usernames a body mentions: @name of an active user who may read the room, case-insensitive.

    At most two queries, and none for a body without an @: names as typed on
    the username index first (what the composer completes), then the others
    case-insensitively.
    """
    if "@" not in body:
        return set()
    typed: set[str] = set()
    for match in _MENTION.finditer(body):
        name = match.group(1)
        # "@alice." ends a sentence; "@bob.smith" is a name.
        typed.update(candidate for candidate in (name, name.rstrip(".-+@")) if candidate)
        if len(typed) >= MENTIONS_MAX:
            break
    if not typed:
        return set()
    users = get_user_model().objects.filter(is_active=True)
    if room.kind == protocol.KIND_DIRECT:
        users = users.filter(chat_memberships__room=room)
    found = set(users.filter(username__in=typed).values_list("username", flat=True))
    known = {name.lower() for name in found}
    rest = {name.lower() for name in typed} - known
    if rest:
        folded = users.annotate(folded=Lower("username")).filter(folded__in=rest)
        found.update(folded.values_list("username", flat=True))
    return found


def _stored(room: Room, user: AbstractBaseUser, client_id: str) -> dict[str, Any] | None:
    row = Message.objects.filter(room=room, author=user, client_id=client_id).values(*MESSAGE_FIELDS).first()
    if row is None:
        return None
    return protocol.message_frame(row)


# Every this many changes, a room's changes older than CHAT_DELETED_KEEP are pruned.
_PRUNE_EVERY = 1000


def _room_seq_take(room_id: int) -> int:
    # The UPDATE takes the room row's lock until commit, so the room's changes
    # commit in seq order and a client resuming after seq s misses none.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE chat_room SET change_seq = change_seq + 1 WHERE id = %s RETURNING change_seq", [room_id])
        (seq,) = cursor.fetchone()
    return seq


def room_change_record(*, room_id: int, kind: str, message_id: int, seq: int | None = None) -> str:
    """Log one change to a room in the current transaction (seq: one taken already); return the cursor after it."""
    if seq is None:
        seq = _room_seq_take(room_id)
    RoomChange.objects.create(room_id=room_id, seq=seq, kind=kind, message_id=message_id)
    if seq % _PRUNE_EVERY == 0:
        RoomChange.objects.expired().filter(room_id=room_id).delete()
    return protocol.cursor(room_id, seq)


def message_post(
    *, room: Room, user: AbstractBaseUser, body: Any, client_id: Any = None
) -> tuple[dict[str, Any], bool]:
    """Store a message; return its frame and whether it is new (False: a retry of a stored one)."""
    text = body_clean(body)
    client_id = client_id_clean(client_id)
    # A retry is answered before the rate limit: it costs nothing and stores nothing.
    existing = _stored(room, user, client_id)
    if existing is not None:
        return existing, False
    wait = rate_take(user_id=user.pk)
    if wait > 0:
        raise ProtocolError(transport.RATE_LIMITED, f"Too many messages; the next one is allowed in {wait:.1f} s.")
    html = message_html(text)
    mentions = protocol.mentions_stored(mentions_find(body=text, room=room))
    try:
        with transaction.atomic():
            # The room's seq first: its lock orders the message ids with the changes.
            seq = _room_seq_take(room.pk)
            # The one write of a message, however many members the room has: counts are read from the markers.
            message = Message.objects.create(
                room=room, author=user, body=text, client_id=client_id, html=html, mentions=mentions
            )
            seq_cursor = room_change_record(room_id=room.pk, kind=RoomChange.POSTED, message_id=message.id, seq=seq)
    except IntegrityError:
        # Two sockets sent the same client_id at once: the unique constraint
        # let one insert win, and the other answers with the winner's row.
        existing = _stored(room, user, client_id)
        if existing is None:
            raise
        return existing, False
    frame = protocol.message_frame(
        {
            "id": message.id,
            "room__slug": room.slug,
            "author__username": user.get_username(),
            "body": message.body,
            "sent_at": message.sent_at,
            "client_id": message.client_id,
            "html": message.html,
            "edited_at": None,
            "reaction_summary": [],
            "mentions": message.mentions,
        },
        cursor=seq_cursor,
    )
    return frame, True


def _message_id_clean(message_id: Any) -> int:
    if isinstance(message_id, bool) or not isinstance(message_id, int) or not 0 < message_id < 2**63:
        raise ProtocolError(transport.INVALID, "'id' must be a message id.")
    return message_id


def message_edit(*, room: Room, user: AbstractBaseUser, message_id: Any, body: Any) -> dict[str, Any]:
    """Replace the body of one's own message within CHAT_EDIT_WINDOW, keeping the earlier one; the chat.edited frame.

    ProtocolError: invalid for an unknown or deleted id or a bad body,
    forbidden for another's message or one past the window; nothing changes.
    """
    message_id = _message_id_clean(message_id)
    text = body_clean(body)
    html = message_html(text)
    with transaction.atomic():
        message = Message.objects.select_for_update().filter(room=room, id=message_id).first()
        if message is None:
            raise ProtocolError(transport.INVALID, "There is no such message in this room.")
        if message.author_id != user.pk:
            raise ProtocolError(transport.FORBIDDEN, "Only the author may edit a message.")
        now = timezone.now()
        if (now - message.sent_at).total_seconds() > settings.CHAT_EDIT_WINDOW:
            raise ProtocolError(
                transport.FORBIDDEN,
                f"A message can be edited for {settings.CHAT_EDIT_WINDOW:g} seconds after it is sent.",
            )
        MessageEdit.objects.create(message=message, body=message.body, edited_at=message.edited_at or message.sent_at)
        message.body, message.html, message.edited_at = text, html, now
        message.save(update_fields=["body", "html", "edited_at"])
        cursor = room_change_record(room_id=room.pk, kind=RoomChange.EDITED, message_id=message.id)
    row = {"id": message.id, "body": message.body, "html": message.html, "edited_at": message.edited_at}
    return protocol.edited_frame(room.slug, row, cursor)


def message_react(*, room: Room, user: AbstractBaseUser, message_id: Any, emoji: Any) -> dict[str, Any]:
    """Toggle one emoji of this user on a message; the chat.reactions frame with the whole new list."""
    message_id = _message_id_clean(message_id)
    try:
        emoji = emoji_clean(emoji)
    except TextRefused as refused:
        raise ProtocolError(transport.INVALID, str(refused)) from None
    with transaction.atomic():
        # Locking the message keeps a delete from passing between the check and the toggle.
        if not Message.objects.select_for_update().filter(room=room, id=message_id).exists():
            raise ProtocolError(transport.INVALID, "There is no such message in this room.")
        removed, _ = Reaction.objects.filter(message_id=message_id, user=user, emoji=emoji).delete()
        if not removed:
            Reaction.objects.create(message_id=message_id, user=user, emoji=emoji)
        reactions = message_reactions([message_id]).get(message_id, [])
        Message.objects.filter(id=message_id).update(reaction_summary=reactions)
        cursor = room_change_record(room_id=room.pk, kind=RoomChange.REACTED, message_id=message_id)
    return protocol.reactions_frame(room.slug, message_id, reactions, cursor)


def room_broadcast(*, slug: str, frame: dict[str, Any], label: str = "chat_deleted") -> None:
    """Send a frame to every socket in a room, from sync code, with broadcast()'s bounded retry."""
    broadcast_sync(protocol.room_group(slug), frame, label=label)


def message_can_delete(*, user: AbstractBaseUser, author_id: int) -> bool:
    return bool(user.is_staff or user.pk == author_id)


def messages_delete(*, messages, actor: AbstractBaseUser | None = None) -> int:
    """Delete messages (a queryset) and tell their rooms once the deletion is committed.

    With an actor (staff in the admin, or whoever deleted it from the room
    page), each deletion is recorded in the audit log in the same transaction.
    """
    with transaction.atomic():
        gone = list(
            messages.order_by("room_id", "id").values_list(
                "id", "room_id", "room__slug", "author_id", "author__username"
            )
        )
        Message.objects.filter(id__in=[message_id for message_id, *_ in gone]).delete()
        if actor is not None:
            audit_record_many(
                actor=actor,
                action=AuditEntry.Action.MESSAGE_DELETED,
                targets=[
                    (author_id, author, f"message {message_id} in {slug}")
                    for message_id, _, slug, author_id, author in gone
                ],
            )
        # Clients that are away now learn of it when they resume (chat.history's "deleted", or its "changes").
        for message_id, room_id, slug, *_ in gone:
            cursor = room_change_record(room_id=room_id, kind=RoomChange.DELETED, message_id=message_id)
            transaction.on_commit(
                lambda message_id=message_id, slug=slug, cursor=cursor: room_broadcast(
                    slug=slug, frame=protocol.deleted_frame(message_id, slug, cursor)
                )
            )
        RoomChange.objects.expired().delete()
    return len(gone)


def message_delete(*, user: AbstractBaseUser, message_id: int) -> None:
    """Delete one message as a moderator (staff) or its author; PermissionDenied for anyone else."""
    author_id = Message.objects.filter(id=message_id).values_list("author_id", flat=True).first()
    if author_id is None:
        raise Message.DoesNotExist(message_id)
    if not message_can_delete(user=user, author_id=author_id):
        raise PermissionDenied("Only staff and the author may delete a message.")
    messages_delete(messages=Message.objects.filter(id=message_id), actor=user)


def room_title_clean(title: Any) -> str:
    """A room's name, through the one text validator; ValidationError when it refuses it."""
    try:
        return text_clean(title, max_chars=protocol.TITLE_MAX_CHARS, field="name")
    except TextRefused as refused:
        raise ValidationError(str(refused).replace("'name' ", "The name ", 1), code="invalid") from None


def room_create(*, title: str, user: AbstractBaseUser) -> Room:
    """Create a public room named title; ValidationError when the name is refused, makes no valid slug or is taken."""
    title = room_title_clean(title)
    slug = slugify(title)[:50].strip("-")
    if not protocol.slug_is_valid(slug):
        raise ValidationError("Use at least one letter or digit.", code="invalid")
    if protocol.slug_is_direct(slug):
        raise ValidationError(
            "Names like %(slug)s are kept for direct messages.", code="reserved", params={"slug": slug}
        )
    if slug in protocol.RESERVED_SLUGS or Room.objects.filter(slug=slug).exists():
        raise ValidationError("A room called %(slug)s exists already.", code="taken", params={"slug": slug})
    try:
        with transaction.atomic():
            return Room.objects.create(slug=slug, title=title, created_by=user)
    except IntegrityError:
        raise ValidationError("A room called %(slug)s exists already.", code="taken", params={"slug": slug}) from None


class RoomMissing(Exception):
    """No room has this slug."""


class RoomForbidden(Exception):
    """The room exists and the user may not read it (a direct room of two others)."""


def membership_join(*, room: Room, user: AbstractBaseUser) -> Membership | None:
    """The user's membership of a room they open; made on their first visit of a public room, with what is there read.

    None for a direct room they are not in (its members are fixed).
    """
    found = Membership.objects.filter(room=room, user_id=user.pk).first()
    if found is not None or room.kind != protocol.KIND_PUBLIC:
        return found
    return _memberships_make({(room.pk, user.pk): room})[room.pk, user.pk]


def _memberships_make(newcomers: dict[tuple[int, int], Room]) -> dict[tuple[int, int], Membership]:
    """Memberships of public rooms for their first visitors, (room id, user id) -> room; the rows, made or found."""
    # A newcomer has not missed the room's past: their marker starts at its newest message.
    rooms = {room.pk: room for room in newcomers.values()}
    newest = {
        room_id: Message.objects.filter(room_id=room_id).order_by("-id").values_list("id", flat=True).first() or 0
        for room_id in rooms
    }
    # Two tabs (or processes) opening the room at once: the row of whichever came first stays.
    Membership.objects.bulk_create(
        [Membership(room_id=room_id, user_id=user_id, last_read_id=newest[room_id]) for room_id, user_id in newcomers],
        ignore_conflicts=True,
    )
    return _memberships_of(set(rooms), {user_id for _, user_id in newcomers})


def _memberships_of(room_ids: set[int], user_ids: set[int]) -> dict[tuple[int, int], Membership]:
    rows = Membership.objects.filter(room_id__in=room_ids, user_id__in=user_ids)
    return {(membership.room_id, membership.user_id): membership for membership in rows}


def rooms_enter(entries: list[tuple[str, AbstractBaseUser]]) -> list[Membership | Exception]:
    """room_enter() for (slug, user) pairs that open rooms together: a few queries in all, not a few per pair."""
    rooms = {room.slug: room for room in Room.objects.filter(slug__in={slug for slug, _ in entries})}
    members = _memberships_of({room.pk for room in rooms.values()}, {user.pk for _, user in entries})
    newcomers = {
        (room.pk, user.pk): room
        for slug, user in entries
        if (room := rooms.get(slug)) is not None
        and room.kind == protocol.KIND_PUBLIC
        and (room.pk, user.pk) not in members
    }
    if newcomers:
        members.update(_memberships_make(newcomers))
    entered: list[Membership | Exception] = []
    for slug, user in entries:
        room = rooms.get(slug)
        if room is None:
            entered.append(RoomMissing(slug))
            continue
        membership = members.get((room.pk, user.pk))
        # A direct room of others, or one that lost a member row: nobody else may read it.
        if membership is None or not room.readable_with(membership):
            entered.append(RoomForbidden(slug))
            continue
        membership.room = room
        entered.append(membership)
    return entered


def room_enter(*, slug: str, user: AbstractBaseUser) -> Membership:
    """Open a room (page or socket): the user's membership, made on a public room's first visit.

    RoomMissing when no room has the slug; RoomForbidden when the user may not read it.
    """
    (entered,) = rooms_enter([(slug, user)])
    if isinstance(entered, Exception):
        raise entered
    return entered


def membership_leave(*, room: Room, user: AbstractBaseUser) -> bool:
    """Take a public room off a user's list (opening it again brings it back); PermissionDenied for a direct room."""
    if room.kind != protocol.KIND_PUBLIC:
        raise PermissionDenied("A direct room's members are fixed.")
    deleted, _ = Membership.objects.filter(room=room, user_id=user.pk).delete()
    return deleted > 0


@dataclass(frozen=True)
class ReadMarker:
    """Where a member's marker stands after a move, and their room's counts from there."""

    up_to: int
    unread: int
    mentions: int


def membership_read(*, room: Room, user: AbstractBaseUser, up_to: int) -> ReadMarker | None:
    """Move a member's read marker forward to up_to; None when it was there or past it already (never back).

    ProtocolError(invalid) when up_to is not a message of this room (a deleted one still is).
    """
    if not (
        Message.objects.filter(room=room, id=up_to).exists()
        or RoomChange.objects.filter(room=room, kind=RoomChange.DELETED, message_id=up_to).exists()
    ):
        raise ProtocolError(transport.INVALID, "'up_to' must be the id of a message of this room.")
    # One conditional UPDATE: two tabs reading at once leave the larger id.
    moved = Membership.objects.filter(room=room, user_id=user.pk, last_read_id__lt=up_to).update(last_read_id=up_to)
    if not moved:
        if Membership.objects.filter(room=room, user_id=user.pk).exists() or room.kind != protocol.KIND_PUBLIC:
            return None
        # A public room this user left in another tab and reads here: reading it is opening it.
        membership = membership_join(room=room, user=user)
        Membership.objects.filter(pk=membership.pk, last_read_id__lt=up_to).update(last_read_id=up_to)
        up_to = max(up_to, membership.last_read_id)
    unread, mentions = room_counts(room=room, user=user)
    return ReadMarker(up_to=up_to, unread=unread, mentions=mentions)


def room_direct_open(*, user: AbstractBaseUser, other: AbstractBaseUser) -> Room:
    """The direct room of two users (slug dm-<low id>-<high id>), made with both as members on first use."""
    if user.pk == other.pk:
        raise ValueError("a direct room needs two people")
    slug = protocol.direct_slug(user.pk, other.pk)
    room = Room.objects.filter(slug=slug).first()
    if room is None:
        first, second = sorted((user, other), key=lambda person: person.pk)
        try:
            with transaction.atomic():
                room = Room.objects.create(
                    slug=slug,
                    kind=protocol.KIND_DIRECT,
                    title=f"{first.get_username()}, {second.get_username()}"[: protocol.TITLE_MAX_CHARS],
                    created_by=user,
                )
                Membership.objects.bulk_create([Membership(room=room, user=first), Membership(room=room, user=second)])
        except IntegrityError:
            room = Room.objects.get(slug=slug)
    if room.kind != protocol.KIND_DIRECT:
        # Migration 0004 moved public rooms off direct slugs and room_create refuses them.
        raise RoomForbidden(slug)
    return room
