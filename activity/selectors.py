"""Activity reads for the dashboard: each series is a few queries, whatever the number of messages or samples.

Closed days come from their roll-ups; only the days since the last roll-up
(today, usually) are counted from the messages themselves, from the last
rolled-up message id on.
"""

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.db.models import Avg, Count, Max
from django.db.models.functions import TruncDate, TruncHour
from django.utils import timezone

from activity.days import midnight, seen_on
from activity.models import DayRollup, OnlineSample, RoomDayRollup, UserSeenDay
from activity.services import MESSAGE_ID_MARGIN
from chat.models import Message
from presence.models import UserPresence


@dataclass(frozen=True)
class OnlinePoint:
    at: datetime
    peak: int
    mean: float


def online_series(*, since: datetime, hourly: bool) -> list[OnlinePoint]:
    """The online samples since a time: each minute's, or each hour's peak and mean."""
    samples = OnlineSample.objects.filter(taken_at__gte=since)
    if not hourly:
        return [OnlinePoint(at, online, online) for at, online in samples.values_list("taken_at", "online")]
    rows = (
        samples.annotate(hour=TruncHour("taken_at"))
        .values_list("hour")
        .annotate(peak=Max("online"), mean=Avg("online"))
        .order_by("hour")
    )
    return [OnlinePoint(hour, peak, float(mean)) for hour, peak, mean in rows]


def online_samples(*, since: datetime):
    """Every minute sample since a time, oldest first, as (minute, online), for the CSV."""
    return OnlineSample.objects.filter(taken_at__gte=since).order_by("taken_at").values_list("taken_at", "online")


def messages_per_room_day(*, first: date, today: date | None = None) -> dict[date, dict[str, int]]:
    """Messages sent each day from `first` to today, per room slug: {day: {slug: count}}, days without any left out."""
    today = today or timezone.localdate()
    result: dict[date, dict[str, int]] = {}
    rolled = RoomDayRollup.objects.filter(day__gte=first).values_list("day", "room__slug", "messages")
    for day, slug, count in rolled:
        result.setdefault(day, {})[slug] = count
    last = DayRollup.objects.filter(day__lt=today).order_by("-day").first()
    tail_from = max(first, last.day + timedelta(days=1)) if last is not None else first
    since_id = last.last_message_id - MESSAGE_ID_MARGIN if last is not None else 0
    tail = (
        Message.objects.filter(id__gt=since_id, sent_at__gte=midnight(tail_from))
        .annotate(day=TruncDate("sent_at"))
        .values_list("day", "room__slug")
        .annotate(messages=Count("id"))
    )
    for day, slug, count in tail:
        result.setdefault(day, {})[slug] = count
    return result


def active_users_per_day(*, first: date, today: date | None = None) -> dict[date, int]:
    """Users seen each day from `first` to today: {day: count}; today's counted now, the others as recorded."""
    today = today or timezone.localdate()
    result = dict(DayRollup.objects.filter(day__gte=first, day__lt=today).values_list("day", "active_users"))
    pending = (
        UserSeenDay.objects.filter(day__gte=first, day__lt=today)
        .exclude(day__in=list(result))
        .values_list("day")
        .annotate(users=Count("user_id"))
        .values_list("day", "users")
    )
    result.update(pending)
    result[today] = UserPresence.objects.filter(seen_on(today)).count()
    return result
