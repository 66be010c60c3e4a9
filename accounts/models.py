from django.conf import settings
from django.db import models
from django.utils import timezone


class LoggedInUser(models.Model):
    """A session that a user logged in with and has not logged out of.

    One row per session, so that logging out on one device leaves the user's
    other sessions recorded. Channels' own login() sends no request, so the
    session key may be unknown.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="logged_in_sessions")
    session_key = models.CharField(max_length=40, null=True, blank=True, unique=True)
    logged_in_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "logged-in session"
        ordering = ["-logged_in_at"]

    def __str__(self) -> str:
        return f"{self.user} since {self.logged_in_at:%Y-%m-%d %H:%M}"


class UsernameSkeleton(models.Model):
    """The digest of a user's name's skeleton (accounts.skeleton), so that a look-alike is one index lookup.

    Kept in step by accounts.services.username_skeleton_record. A user whose
    name looks like an earlier user's (created by the admin, or before this
    table) has no row: the earlier user keeps the digest.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="username_skeleton"
    )
    digest = models.CharField(max_length=64, unique=True)

    def __str__(self) -> str:
        return f"{self.user_id}: {self.digest[:12]}…"


class AuditEntry(models.Model):
    """One moderation action: who did what to whom, and when.

    Written in the transaction of the action it records, by the admin or a
    service that knows the acting user; never changed or deleted afterwards.
    The names are copied so that an entry still reads right after either
    account is deleted or renamed.
    """

    class Action(models.TextChoices):
        MESSAGE_DELETED = "message_deleted", "message deleted"
        SESSIONS_ENDED = "sessions_ended", "sessions ended"
        USER_DEACTIVATED = "user_deactivated", "user deactivated"
        USER_REACTIVATED = "user_reactivated", "user reactivated"
        STAFF_GRANTED = "staff_granted", "staff status granted"
        STAFF_REMOVED = "staff_removed", "staff status removed"
        SUPERUSER_GRANTED = "superuser_granted", "superuser status granted"
        SUPERUSER_REMOVED = "superuser_removed", "superuser status removed"

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor_name = models.CharField("by", max_length=150, db_index=True)
    action = models.CharField(max_length=32, choices=Action.choices, db_index=True)
    target = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    target_name = models.CharField("whom", max_length=150, blank=True)
    detail = models.CharField(max_length=300, blank=True)

    class Meta:
        verbose_name = "audit entry"
        verbose_name_plural = "audit log"
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_name}: {self.get_action_display()} {self.target_name}".rstrip()
