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
        shows a room or its messages starts from it (Room.readable_with() is the
        same rule for a room and membership already read).
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
    # The last seq of the room's change log (RoomChange); raised under the row's lock.
    change_seq = models.BigIntegerField(default=0)

    objects = RoomQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def readable_with(self, membership: "Membership | None") -> bool:
        """RoomQuerySet.readable_by() for a room read already, given the user's membership of it (or None)."""
        return self.kind == KIND_PUBLIC or membership is not None


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
