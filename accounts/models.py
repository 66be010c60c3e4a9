from django.conf import settings
from django.db import models


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
