"""Activity writes: the lease, the minute sample, the daily roll-up and pruning."""

from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, Max, OuterRef, Q
from django.db.models.functions import TruncDate
from django.utils import timezone

from activity.days import midnight, seen_on
from activity.models import DayRollup, Lease, OnlineSample, RoomDayRollup, UserSeenDay
from chat.models import Message
from presence.models import UserPresence
from presence.selectors import presence_online_count

# Message ids follow the order of their INSERTs and sent_at that of the Python
# clock just before: around midnight two processes can cross by a few ids.
# Counting from this far below the last rolled-up id catches those.
MESSAGE_ID_MARGIN = 1000


def lease_take(*, name: str, holder: str, seconds: float) -> bool:
    """Take or renew the lease `name` for `seconds`; False while another holder's lease runs.

    One atomic UPDATE takes a lapsed lease or renews the holder's own, so two
    processes can never both succeed; the row is made on first use.
    """
    now = timezone.now()
    until = now + timedelta(seconds=seconds)
    taken = Lease.objects.filter(Q(expires_at__lt=now) | Q(holder=holder), name=name).update(
        holder=holder, expires_at=until
    )
    if taken:
        return True
    if Lease.objects.filter(name=name).exists():
        return False
    try:
        with transaction.atomic():
            Lease.objects.create(name=name, holder=holder, expires_at=until)
    except IntegrityError:  # another process made it first, and holds it
        return False
    return True


@transaction.atomic
def online_sample_take(*, now: datetime | None = None) -> int:
    """Record how many users are online this minute, and note each user seen today for the first time.

    One INSERT for the sample; the users seen today are inserted only the
    first time each of them is seen that day. Returns the count.
    """
    now = now or timezone.now()
    online = presence_online_count()
    OnlineSample.objects.bulk_create(
        [OnlineSample(taken_at=now.replace(second=0, microsecond=0), online=online)], ignore_conflicts=True
    )
    today = timezone.localdate(now)
    recorded = UserSeenDay.objects.filter(day=today, user_id=OuterRef("user_id"))
    new = list(UserPresence.objects.filter(seen_on(today)).exclude(Exists(recorded)).values_list("user_id", flat=True))
    if new:
        UserSeenDay.objects.bulk_create(
            [UserSeenDay(day=today, user_id=user_id) for user_id in new], ignore_conflicts=True
        )
    return online


@transaction.atomic
def activity_roll_up(*, today: date | None = None) -> int:
    """Count each closed day since the last roll-up (within ACTIVITY_KEEP_DAYS) once; return how many days.

    A day's messages per room are counted by when they were sent, from the
    last rolled-up message id on, so that each roll-up reads only the new
    days' messages; its active users are those noted by the minute samples.
    """
    today = today or timezone.localdate()
    last = DayRollup.objects.order_by("-day").first()
    start = today - timedelta(days=settings.ACTIVITY_KEEP_DAYS)
    if last is not None:
        start = max(start, last.day + timedelta(days=1))
    if start >= today:
        return 0
    last_id = last.last_message_id if last is not None else 0
    counts = (
        Message.objects.filter(
            id__gt=last_id - MESSAGE_ID_MARGIN, sent_at__gte=midnight(start), sent_at__lt=midnight(today)
        )
        .annotate(day=TruncDate("sent_at"))
        .values_list("day", "room_id")
        .annotate(messages=Count("id"), last=Max("id"))
    )
    active = dict(
        UserSeenDay.objects.filter(day__gte=start, day__lt=today)
        .values_list("day")
        .annotate(users=Count("user_id"))
        .values_list("day", "users")
    )
    rooms: list[RoomDayRollup] = []
    last_by_day: dict[date, int] = {}
    for day, room_id, messages, last_of_room in counts:
        rooms.append(RoomDayRollup(day=day, room_id=room_id, messages=messages))
        last_by_day[day] = max(last_by_day.get(day, 0), last_of_room)
    days = []
    day = start
    while day < today:
        last_id = max(last_id, last_by_day.get(day, 0))
        days.append(DayRollup(day=day, active_users=active.get(day, 0), last_message_id=last_id))
        day += timedelta(days=1)
    RoomDayRollup.objects.bulk_create(rooms)
    DayRollup.objects.bulk_create(days)
    UserSeenDay.objects.filter(day__lt=today).delete()
    return len(days)


def activity_prune(*, now: datetime | None = None) -> int:
    """Delete the samples and roll-ups older than ACTIVITY_KEEP_DAYS; return how many rows went."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.ACTIVITY_KEEP_DAYS)
    first_day = timezone.localdate(cutoff)
    deleted = 0
    for rows in (
        OnlineSample.objects.filter(taken_at__lt=cutoff),
        RoomDayRollup.objects.filter(day__lt=first_day),
        DayRollup.objects.filter(day__lt=first_day),
    ):
        deleted += rows.delete()[0]
    return deleted
