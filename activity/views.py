"""The admin's activity dashboard: /admin/activity/, staff only (wrapped in the admin's admin_view)."""

import csv
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from activity import charts
from activity.selectors import active_users_per_day, messages_per_room_day, online_samples, online_series
from presence.selectors import presence_online_count


@dataclass(frozen=True)
class Span:
    key: str
    label: str
    length: timedelta
    hourly: bool  # the online chart: each hour's peak, or each minute's sample
    tick_every: timedelta
    tick_format: str
    days: int  # the daily charts
    day_tick_every: int
    day_tick_format: str


SPANS = {
    span.key: span
    for span in [
        Span("24h", "24 hours", timedelta(hours=24), False, timedelta(hours=6), "%H:%M", 7, 1, "%a"),
        Span("7d", "7 days", timedelta(days=7), True, timedelta(days=1), "%a %-d", 7, 1, "%a"),
        Span("30d", "30 days", timedelta(days=30), True, timedelta(days=7), "%-d %b", 30, 7, "%-d %b"),
    ]
}
SERIES = ("online", "messages", "active")
FORMATS = ("html", "csv")


class BadRequest(Exception):
    """A query parameter the dashboard does not take; its message says which values it does."""


def _choice(request: HttpRequest, name: str, allowed, default: str | None) -> str:
    value = request.GET.get(name, default)
    if value not in allowed:
        raise BadRequest(f"'{name}' must be one of {', '.join(allowed)}; got {value!r}.")
    return value


def dashboard(request: HttpRequest) -> HttpResponse:
    """Called for /admin/activity/?range=24h|7d|30d, and with &format=csv&series=online|messages|active."""
    try:
        span = SPANS[_choice(request, "range", list(SPANS), "24h")]
        if _choice(request, "format", FORMATS, "html") == "csv":
            return _csv(span, _choice(request, "series", SERIES, None))
    except BadRequest as bad:
        context = {**admin.site.each_context(request), "title": "Activity", "detail": str(bad), "spans": SPANS.values()}
        return render(request, "activity/bad_request.html", context, status=400)
    return render(request, "activity/dashboard.html", {**admin.site.each_context(request), **_dashboard(span)})


def _days(span: Span, today: date) -> list[date]:
    return [today - timedelta(days=n) for n in range(span.days - 1, -1, -1)]


def _time_ticks(span: Span, start: datetime, end: datetime) -> list[charts.Tick]:
    # Counted back from the last boundary (a multiple of the step since midnight) before the end.
    local_end = timezone.localtime(end)
    midnight = local_end.replace(hour=0, minute=0, second=0, microsecond=0)
    step = span.tick_every if span.tick_every < timedelta(days=1) else timedelta(days=1)
    at = midnight + ((local_end - midnight) // step) * step
    ticks = []
    while at >= start:
        ticks.append(charts.Tick(100 * (at - start) / (end - start), at.strftime(span.tick_format)))
        at -= span.tick_every
    return ticks[::-1]


def _dashboard(span: Span) -> dict:
    now = timezone.now()
    today = timezone.localdate(now)
    start = now - span.length
    days = _days(span, today)

    online_now = presence_online_count()
    # The line ends with the count now, so that it reaches the right edge with what "Online now" says.
    points = [(point.at, point.peak) for point in online_series(since=start, hourly=span.hourly)]
    points.append((now, online_now))
    peak = max(value for _, value in points)
    online = charts.line_chart(
        points,
        start=start,
        end=now,
        gap=(2.5 * 3600) if span.hourly else 150,
        ticks=_time_ticks(span, start, now),
        label=f"Users online over the last {span.label}: at most {peak:,}.",
    )

    per_room = messages_per_room_day(first=days[0], today=today)
    day_ticks = charts.day_ticks(days, every=span.day_tick_every, fmt=lambda day: day.strftime(span.day_tick_format))
    messages_today = sum(per_room.get(today, {}).values())
    messages, rooms = charts.stacked_bar_chart(
        days,
        per_room,
        ticks=day_ticks,
        label=f"Messages a day per room over the last {span.days} days; {messages_today:,} today.",
        noun="message",
    )

    active = active_users_per_day(first=days[0], today=today)
    active_chart = charts.bar_chart(
        days,
        active,
        ticks=day_ticks,
        label=f"Users active each day over the last {span.days} days; {active.get(today, 0):,} today.",
        noun="active user",
    )
    return {
        "title": "Activity",
        "span": span,
        "spans": SPANS.values(),
        "figures": [
            ("online-now", "Online now", online_now),
            ("online-peak", f"Most online, last {span.label}", peak),
            ("messages-today", "Messages today", messages_today),
            ("active-today", "Active users today", active.get(today, 0)),
        ],
        "online_chart": online,
        "messages_chart": messages,
        "rooms": rooms,
        "active_chart": active_chart,
        "days": [
            {"day": day, "messages": sum(per_room.get(day, {}).values()), "active": active.get(day, 0)}
            for day in reversed(days)
        ],
        "hourly": span.hourly,
        "time_zone": timezone.get_current_timezone_name(),
        "keep_days": settings.ACTIVITY_KEEP_DAYS,
    }


def _csv(span: Span, series: str) -> HttpResponse:
    now = timezone.now()
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="activity-{series}-{span.key}.csv"'
    writer = csv.writer(response)
    if series == "online":
        writer.writerow(["minute", "online"])
        for at, online in online_samples(since=now - span.length).iterator():
            writer.writerow([timezone.localtime(at).isoformat(), online])
        return response
    today = timezone.localdate(now)
    days = _days(span, today)
    if series == "messages":
        writer.writerow(["day", "room", "messages"])
        per_room = messages_per_room_day(first=days[0], today=today)
        for day in days:
            for room, count in sorted(per_room.get(day, {}).items()):
                writer.writerow([day.isoformat(), room, count])
        return response
    writer.writerow(["day", "active_users"])
    active = active_users_per_day(first=days[0], today=today)
    for day in days:
        writer.writerow([day.isoformat(), active.get(day, 0)])
    return response
