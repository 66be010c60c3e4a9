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

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["room", "author", "client_id"], name="chat_message_once_per_client_id"),
        ]
        # History reads walk one room by id, in both directions.
        indexes = [models.Index(fields=["room", "id"], name="chat_message_room_id")]

    def __str__(self) -> str:
        return f"{self.author_id} in {self.room_id}: {self.body[:40]}"


class DeletedMessageQuerySet(models.QuerySet):
    def kept(self) -> "DeletedMessageQuerySet":
        """The traces still kept: deleted within CHAT_DELETED_KEEP."""
        return self.filter(deleted_at__gte=_deleted_kept_since())

    def expired(self) -> "DeletedMessageQuerySet":
        return self.filter(deleted_at__lt=_deleted_kept_since())


def _deleted_kept_since() -> datetime:
    return timezone.now() - timedelta(seconds=settings.CHAT_DELETED_KEEP)


class DeletedMessage(models.Model):
    """A trace of a deleted message, so that a client resuming with ?after=<id> can remove it too.

    Kept for CHAT_DELETED_KEEP seconds: a client away for longer shows the
    message until its page is loaded again.
    """

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="deleted_messages")
    message_id = models.BigIntegerField()
    deleted_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = DeletedMessageQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["room", "message_id"], name="chat_deleted_room_message")]

    def __str__(self) -> str:
        return f"{self.message_id} in {self.room_id}"
