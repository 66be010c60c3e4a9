from datetime import datetime, timedelta

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from chat.protocol import KIND_DIRECT, KIND_PUBLIC, SLUG_PATTERN

slug_validator = RegexValidator(f"^{SLUG_PATTERN}$", "Lower-case letters, digits and hyphens, at most 50.")


class RoomQuerySet(models.QuerySet):
    def readable_by(self, user) -> "RoomQuerySet":
        """The rooms a user may open, read, search and be notified of: every public room, and their direct rooms.

        The one place the rule lives: every page, socket, endpoint and count that
        shows a room or its messages starts from it.
        """
        if user is None or not user.is_authenticated:
            return self.none()
        member = Membership.objects.filter(room_id=OuterRef("pk"), user_id=user.pk)
        # Exists, not a join: a join on a public room's members would repeat the room once per member.
        return self.filter(Q(kind=KIND_PUBLIC) | Q(Exists(member)))


class Room(models.Model):
    """A chat room, addressed by its slug in URLs and channel-layer group names.

    A public room is open to every logged-in user; a direct room to its two
    members only (slug dm-<low user id>-<high user id>).
    """

    KINDS = [(KIND_PUBLIC, "public"), (KIND_DIRECT, "direct")]

    slug = models.CharField(max_length=50, unique=True, validators=[slug_validator])
    title = models.CharField(max_length=100)
    kind = models.CharField(max_length=8, choices=KINDS, default=KIND_PUBLIC)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = RoomQuerySet.as_manager()

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
    # The usernames written @username in the body, worked out once when it is
    # stored: " alice bob " (sorted, space-separated, a space at each end, so
    # that a LIKE '% alice %' finds one name; usernames hold no spaces), or "".
    mentions = models.TextField(default="", blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["room", "author", "client_id"], name="chat_message_once_per_client_id"),
        ]
        indexes = [
            # History reads walk one room by id, in both directions; unread counts walk it from a marker,
            # and with the author in the index (PostgreSQL) they need no row but the index's.
            models.Index(fields=["room", "id"], include=["author"], name="chat_message_room_id_author"),
            # Mention counts walk only the messages that mention someone.
            models.Index(
                fields=["room", "id"],
                include=["author", "mentions"],
                condition=~Q(mentions=""),
                name="chat_message_mentioned",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.author_id} in {self.room_id}: {self.body[:40]}"


class Membership(models.Model):
    """A user's place in a room: it puts the room on their list, and it is their read marker there.

    Counts are read from it: unread is the others' messages after
    last_read_id, so a message costs one write however many members its room has.
    """

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_memberships")
    # The newest message id the user has been shown (0: none); it only moves forward.
    last_read_id = models.BigIntegerField(default=0)
    joined_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # Also the (room, user) index that the counts of a room's members are read through.
            models.UniqueConstraint(fields=["room", "user"], name="chat_membership_once"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.room_id}, read to {self.last_read_id}"


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
