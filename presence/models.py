from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone


def live_cutoff(now: datetime | None = None) -> datetime:
    """Sockets whose heartbeat is older than this belong to a process that stopped refreshing them."""
    return (now or timezone.now()) - timedelta(seconds=settings.PRESENCE_TTL)


class ConnectionQuerySet(models.QuerySet):
    def live(self, now: datetime | None = None) -> "ConnectionQuerySet":
        """Sockets whose process still refreshes them (the one definition of a live connection)."""
        return self.filter(heartbeat_at__gte=live_cutoff(now))

    def stale(self, now: datetime | None = None) -> "ConnectionQuerySet":
        return self.filter(heartbeat_at__lt=live_cutoff(now))


class UserPresence(models.Model):
    """A user's presence as timestamps: online since when, or last seen when.

    The row is also the per-user lock that makes each online/offline transition
    happen once, whichever process and socket caused it.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="presence"
    )
    online_since = models.DateTimeField(null=True, blank=True)
    last_seen = models.DateTimeField(null=True, blank=True, db_index=True)
    # The state last announced to watchers while online: away when every live
    # socket is idle. Kept so that each online/away change is announced once.
    away = models.BooleanField(default=False)
    away_since = models.DateTimeField(null=True, blank=True)
    # What the user says they are doing; cleared by the heartbeat at status_expires_at.
    status_text = models.CharField(max_length=80, blank=True)
    status_emoji = models.CharField(max_length=16, blank=True)
    status_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # Do-not-disturb: no notifications; others see it.
    dnd = models.BooleanField(default=False)
    # Shown offline to everyone else (one leave when turned on, one join when turned off).
    invisible = models.BooleanField(default=False)

    class Meta:
        verbose_name_plural = "user presence"

    def __str__(self) -> str:
        return f"{self.user_id} online since {self.online_since}" if self.online_since else f"{self.user_id} offline"


class Connection(models.Model):
    """One open WebSocket, on some process of some host."""

    channel_name = models.CharField(max_length=200, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="connections")
    session_key = models.CharField(max_length=40, blank=True, db_index=True)
    # The process that holds the socket; it refreshes heartbeat_at for all of its sockets at once.
    server = models.CharField(max_length=100, db_index=True)
    # Which endpoint the socket is on, as the endpoint names itself ("presence", "chat", ...).
    endpoint = models.CharField(max_length=16)
    # What the socket is about within its endpoint (a chat room's slug), or empty.
    topic = models.CharField(max_length=50, blank=True, db_index=True)
    idle = models.BooleanField(default=False)
    opened_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField(db_index=True)

    objects = ConnectionQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["user", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"{self.endpoint} socket of {self.user_id} on {self.server}"
