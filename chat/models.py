from datetime import datetime, timedelta

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from chat.protocol import SLUG_PATTERN

slug_validator = RegexValidator(f"^{SLUG_PATTERN}$", "Lower-case letters, digits and hyphens, at most 50.")


class Room(models.Model):
    """A chat room, addressed by its slug in URLs and channel-layer group names."""

    slug = models.CharField(max_length=50, unique=True, validators=[slug_validator])
    title = models.CharField(max_length=100)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # The last seq of the room's change log (RoomChange); raised under the row's lock.
    change_seq = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Message(models.Model):
    """One stored chat message; ids increase, so they order a room's history."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_messages")
    body = models.TextField()
    sent_at = models.DateTimeField(auto_now_add=True)
    # Chosen by the client so that a retry after a reconnect is stored once.
    client_id = models.CharField(max_length=64)
    # Rendered once from the body (chat.formatting) when it is stored or edited: pages insert it as markup.
    html = models.TextField(default="")
    edited_at = models.DateTimeField(null=True, blank=True)
    # The reactions as every frame lists them ([{"emoji", "users"}]), rewritten with each toggle (Reaction rows
    # are the truth): a history is then one query, which matters when a thousand sockets open at once.
    reaction_summary = models.JSONField(default=list)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["room", "author", "client_id"], name="chat_message_once_per_client_id"),
        ]
        # History reads walk one room by id, in both directions.
        indexes = [models.Index(fields=["room", "id"], name="chat_message_room_id")]

    def __str__(self) -> str:
        return f"{self.author_id} in {self.room_id}: {self.body[:40]}"


class RoomChangeQuerySet(models.QuerySet):
    def kept(self) -> "RoomChangeQuerySet":
        """The changes still kept: made within CHAT_DELETED_KEEP."""
        return self.filter(changed_at__gte=_changes_kept_since())

    def expired(self) -> "RoomChangeQuerySet":
        return self.filter(changed_at__lt=_changes_kept_since())


def _changes_kept_since() -> datetime:
    return timezone.now() - timedelta(seconds=settings.CHAT_DELETED_KEEP)


class RoomChange(models.Model):
    """One change to what a room stores (a message posted, edited, deleted, or its reactions changed).

    seq is the room's change sequence: Room.change_seq is raised in the same
    transaction, under the room row's lock, so a room's seqs are contiguous and
    committed in order, and a client that saw up to seq s misses nothing by
    asking for seq > s. Kept for CHAT_DELETED_KEEP seconds; a cursor older
    than that is answered with a reset. A deleted message's change outlives
    the message (message_id is no foreign key), so resuming clients remove it.
    """

    POSTED = "posted"
    EDITED = "edited"
    DELETED = "deleted"
    REACTED = "reacted"
    KINDS = [(POSTED, POSTED), (EDITED, EDITED), (DELETED, DELETED), (REACTED, REACTED)]

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="changes")
    seq = models.BigIntegerField()
    kind = models.CharField(max_length=8, choices=KINDS)
    message_id = models.BigIntegerField()
    changed_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = RoomChangeQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["room", "seq"], name="chat_roomchange_room_seq")]

    def __str__(self) -> str:
        return f"{self.room_id}.{self.seq} {self.kind} {self.message_id}"


class MessageEdit(models.Model):
    """An earlier version of an edited message: its body, and since when it was the message's body."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="edits")
    body = models.TextField()
    edited_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.message_id} at {self.edited_at}"


class Reaction(models.Model):
    """One user's one emoji on a message; a user may hold several different ones on a message."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="reactions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_reactions")
    emoji = models.CharField(max_length=32)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "user", "emoji"], name="chat_reaction_once"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.emoji} on {self.message_id}"
