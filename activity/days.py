"""Days as the dashboard counts them: those of the site's time zone (TIME_ZONE, UTC by default)."""

from datetime import date, datetime, time

from django.db.models import Q
from django.utils import timezone


def midnight(day: date) -> datetime:
    """The start of a day in the site's time zone."""
    return timezone.make_aware(datetime.combine(day, time.min))


def seen_on(day: date) -> Q:
    """The users (UserPresence rows) seen on a day that is still going on: online now, or last seen since it began."""
    # last_seen only moves forward, so a user last seen on or after the day's
    # start, or online now, was seen that day.
    return Q(online_since__isnull=False) | Q(last_seen__gte=midnight(day))
