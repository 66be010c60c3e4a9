from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

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
