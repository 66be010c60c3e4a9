"""The admin's activity dashboard on PostgreSQL with 30 days of minute samples and a million messages.

Run on a private, throw-away cluster:

    scripts/with-postgres .venv/bin/python bench/activity_dashboard.py [--messages 1000000] [--runs 30]

It fills the database it is pointed at (DATABASE_URL) with users, rooms, a
sample a minute for 30 days and the messages spread over the same 30 days,
rolls the closed days up as the hourly housekeeping does, then renders
/admin/activity/ through the whole Django stack (middleware, session, admin,
template) as a staff user and prints the median and p95 beside the 200 ms
target. It also times the minute sample and the first roll-up, and the 30-day
page with the roll-ups removed, to show what they save. Never point it at real data.
"""

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "presence_site.settings")

TARGET_MS = 200.0


def timed(call, runs: int) -> list[float]:
    call()  # warm: connections, template cache, the database's buffers
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return sorted(samples)


def p95(samples: list[float]) -> float:
    return samples[min(len(samples) - 1, int(len(samples) * 0.95))]


def report(label: str, samples: list[float], *, target: float | None = None) -> None:
    line = f"{label:<44} median {statistics.median(samples):7.1f} ms   p95 {p95(samples):7.1f} ms"
    if target is not None:
        line += f"   (target {target:.0f} ms: {'met' if p95(samples) < target else 'MISSED'})"
    print(line, flush=True)


def cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def fill(cursor, *, users: int, rooms: int, messages: int, days: int, online: int) -> None:
    """Everything in a few set-based statements: a million rows take seconds, not minutes."""
    cursor.execute(
        "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, "
        "is_active, date_joined) SELECT '!', false, 'user' || g, '', '', '', false, true, now() "
        "FROM generate_series(1, %s) g",
        [users],
    )
    cursor.execute(
        "INSERT INTO chat_room (slug, title, created_at) SELECT 'room-' || g, 'Room ' || g, now() "
        "FROM generate_series(1, %s) g",
        [rooms],
    )
    # Busy rooms and quiet ones (room k gets about 1/k of the messages), spread evenly over the days, in id order.
    cursor.execute(
        """
        INSERT INTO chat_message (room_id, author_id, body, sent_at, client_id)
        SELECT r.first + least(floor(1 / (random() * 0.95 + 0.05))::int - 1, %(rooms)s - 1),
               u.first + (g %% %(users)s),
               'message ' || g || ' ' || repeat('x', 60),
               now() - make_interval(days => %(days)s) + g * (make_interval(days => %(days)s) / %(messages)s),
               'c' || g
        FROM generate_series(1, %(messages)s) g,
             (SELECT min(id) AS first FROM chat_room) r,
             (SELECT min(id) AS first FROM auth_user) u
        """,
        {"rooms": rooms, "users": users, "days": days, "messages": messages},
    )
    cursor.execute(
        """
        INSERT INTO activity_onlinesample (taken_at, online)
        SELECT date_trunc('minute', now()) - g * interval '1 minute',
               (100 + 80 * sin(g / 229.2))::int
        FROM generate_series(1, %s) g
        """,
        [days * 24 * 60],
    )
    # Users seen on each past day (the minute sample notes them; the roll-up counts them).
    cursor.execute(
        """
        INSERT INTO activity_userseenday (day, user_id)
        SELECT current_date - d, id FROM auth_user, generate_series(0, %s) d WHERE random() < 0.4
        """,
        [days - 1],
    )
    # Presence now: some online with a live socket, the others seen over the last days.
    cursor.execute(
        """
        INSERT INTO presence_userpresence (user_id, online_since, last_seen, away)
        SELECT id, CASE WHEN n <= %(online)s THEN now() END, now() - random() * interval '2 days', false
        FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM auth_user) u
        """,
        {"online": online},
    )
    cursor.execute(
        """
        INSERT INTO presence_connection (channel_name, user_id, session_key, server, endpoint, topic, idle,
                                         opened_at, heartbeat_at)
        SELECT 'bench.' || user_id, user_id, '', 'bench', 'presence', '', false, now(), now()
        FROM presence_userpresence WHERE online_since IS NOT NULL
        """
    )
    for table in ("chat_message", "activity_onlinesample", "activity_userseenday", "presence_userpresence"):
        cursor.execute(f"ANALYZE {table}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rooms", type=int, default=40)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--online", type=int, default=300)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from activity.jobs import sample_round
    from activity.models import DayRollup, OnlineSample, RoomDayRollup
    from activity.services import activity_roll_up
    from chat.models import Message

    if connection.vendor != "postgresql":
        sys.exit("activity_dashboard.py measures PostgreSQL: run it under scripts/with-postgres or with DATABASE_URL.")
    # As in production: no query log, no debug wrappers (the static files stay those of static/).
    settings.DEBUG = False
    warnings.filterwarnings("ignore", "No directory at", UserWarning)  # STATIC_ROOT: not collected here
    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        server = cursor.fetchone()[0].split(" on ")[0]
    print(f"{platform.node()}: {cpu()}, {os.cpu_count()} cores; {server}; Python {platform.python_version()}")

    if not Message.objects.exists():
        started = time.perf_counter()
        with connection.cursor() as cursor:
            fill(cursor, users=args.users, rooms=args.rooms, messages=args.messages, days=args.days, online=args.online)
        print(f"filled in {time.perf_counter() - started:.1f} s", flush=True)
    print(
        f"{Message.objects.count():,} messages in {args.rooms} rooms over {args.days} days, "
        f"{OnlineSample.objects.count():,} minute samples, {args.users:,} users ({args.online} online)",
        flush=True,
    )

    started = time.perf_counter()
    days = activity_roll_up()
    print(f"first roll-up: {days} closed days in {(time.perf_counter() - started) * 1000:.0f} ms (once, in the job)")
    report("minute sample (lease, count, insert)", timed(sample_round, args.runs))

    staff, _ = get_user_model().objects.get_or_create(username="bench-staff", defaults={"is_staff": True})
    client = Client(HTTP_HOST="localhost")
    client.force_login(staff)

    def page(query: str):
        def get() -> None:
            response = client.get("/admin/activity/" + query)
            assert response.status_code == 200, response.status_code

        return get

    for query, label in [("?range=24h", "24 hours"), ("?range=7d", "7 days"), ("?range=30d", "30 days")]:
        report(f"/admin/activity/{query} ({label})", timed(page(query), args.runs), target=TARGET_MS)
    report("CSV of 30 days of minute samples", timed(page("?range=30d&format=csv&series=online"), 5))

    # What the roll-ups save: the same page counting every message of the 30 days itself.
    RoomDayRollup.objects.all().delete()
    DayRollup.objects.all().delete()
    report("30 days with no roll-up (for comparison)", timed(page("?range=30d"), 5))


if __name__ == "__main__":
    main()
