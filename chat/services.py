"""Chat writes: rooms, messages, moderation. Broadcasts go out only after the data is committed."""

import logging
import uuid
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from accounts.models import AuditEntry
from accounts.services import audit_record_many
from accounts.text import TextRefused, text_clean
from chat import protocol
from chat.models import DeletedMessage, Message, Room
from chat.ratelimit import rate_take
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


def _stored(room: Room, user: AbstractBaseUser, client_id: str) -> dict[str, Any] | None:
    row = (
        Message.objects.filter(room=room, author=user, client_id=client_id)
        .values("id", "body", "sent_at", "client_id")
        .first()
    )
    if row is None:
        return None
    return protocol.message_frame({**row, "room__slug": room.slug, "author__username": user.get_username()})


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
    try:
        with transaction.atomic():
            message = Message.objects.create(room=room, author=user, body=text, client_id=client_id)
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
        }
    )
    return frame, True


def room_broadcast(*, slug: str, frame: dict[str, Any]) -> None:
    """Send a frame to every socket in a room, from sync code, with broadcast()'s bounded retry."""
    broadcast_sync(protocol.room_group(slug), frame, label="chat_deleted")


def message_can_delete(*, user: AbstractBaseUser, author_id: int) -> bool:
    return bool(user.is_staff or user.pk == author_id)


def messages_delete(*, messages, actor: AbstractBaseUser | None = None) -> int:
    """Delete messages (a queryset) and tell their rooms once the deletion is committed.

    With an actor (staff in the admin, or whoever deleted it from the room
    page), each deletion is recorded in the audit log in the same transaction.
    """
    with transaction.atomic():
        gone = list(messages.values_list("id", "room_id", "room__slug", "author_id", "author__username"))
        Message.objects.filter(id__in=[message_id for message_id, *_ in gone]).delete()
        # Clients that are away now learn of it when they resume (chat.history's "deleted").
        DeletedMessage.objects.bulk_create(
            DeletedMessage(room_id=room_id, message_id=message_id) for message_id, room_id, *_ in gone
        )
        DeletedMessage.objects.expired().delete()
        if actor is not None:
            audit_record_many(
                actor=actor,
                action=AuditEntry.Action.MESSAGE_DELETED,
                targets=[
                    (author_id, author, f"message {message_id} in {slug}")
                    for message_id, _, slug, author_id, author in gone
                ],
            )
        for message_id, _, slug, *_ in gone:
            transaction.on_commit(
                lambda message_id=message_id, slug=slug: room_broadcast(
                    slug=slug, frame=protocol.deleted_frame(message_id)
                )
            )
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
    """Create a room named title; ValidationError when the name is refused, makes no valid slug or is taken."""
    title = room_title_clean(title)
    slug = slugify(title)[:50].strip("-")
    if not protocol.slug_is_valid(slug):
        raise ValidationError("Use at least one letter or digit.", code="invalid")
    if Room.objects.filter(slug=slug).exists():
        raise ValidationError("A room called %(slug)s exists already.", code="taken", params={"slug": slug})
    try:
        with transaction.atomic():
            return Room.objects.create(slug=slug, title=title, created_by=user)
    except IntegrityError:
        raise ValidationError("A room called %(slug)s exists already.", code="taken", params={"slug": slug}) from None


def room_open(*, slug: str, user: AbstractBaseUser) -> Room:
    """The room with this (valid) slug, created on first visit."""
    room, _ = Room.objects.get_or_create(slug=slug, defaults={"title": slug, "created_by": user})
    return room
