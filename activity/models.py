"""What the activity dashboard reads: one online sample a minute, and each closed day rolled up once.

Written only by the housekeeping jobs (activity/jobs.py), each run by one
process of the deployment at a time under a Lease.
"""

from django.conf import settings
from django.db import models


class Lease(models.Model):
    """Which process may run a deployment-wide job until when (activity.services.lease_take)."""

    name = models.CharField(max_length=100, primary_key=True)
    holder = models.CharField(max_length=100)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder} until {self.expires_at:%H:%M:%S}"


class OnlineSample(models.Model):
    """How many users were online at the start of one minute (presence_online_count)."""

    # The minute, truncated: unique, so that a hand-over of the lease cannot sample a minute twice.
    taken_at = models.DateTimeField(unique=True)
    online = models.PositiveIntegerField()

    class Meta:
        ordering = ["taken_at"]

    def __str__(self) -> str:
        return f"{self.online} online at {self.taken_at:%Y-%m-%d %H:%M}"


class UserSeenDay(models.Model):
    """A user seen on a day not yet rolled up: online, or their last_seen on that day (UTC)."""

    day = models.DateField()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "user"], name="activity_user_seen_once_a_day")]

    def __str__(self) -> str:
        return f"{self.user_id} seen on {self.day}"


class DayRollup(models.Model):
    """A closed day, counted once: how many users were seen, and the last message id sent by its end."""

    day = models.DateField(primary_key=True)
    active_users = models.PositiveIntegerField()
    # Messages after this id (less a margin) are those of later days: the
    # dashboard counts the days not yet rolled up from there, not from the start.
    last_message_id = models.BigIntegerField()

    class Meta:
        ordering = ["day"]

    def __str__(self) -> str:
        return f"{self.day}: {self.active_users} active"


class RoomDayRollup(models.Model):
    """Messages sent in one room on one closed day."""

    day = models.DateField()
    room = models.ForeignKey("chat.Room", on_delete=models.CASCADE, related_name="+")
    messages = models.PositiveIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "room"], name="activity_room_day_once")]

    def __str__(self) -> str:
        return f"{self.room_id} on {self.day}: {self.messages}"
