"""GET /api/rooms for a user in 200 rooms, with a million messages stored, on PostgreSQL: p50/p95 beside 20 ms.

Fills the database it is pointed at (use scripts/with-postgres, which makes a
throw-away cluster; never point it at real data), then times the whole request
through Django's test client (session and user look-ups included) and the
selector alone:

    scripts/with-postgres .venv/bin/python bench/rooms_api.py [--messages 1000000] [--explain]

The data: 250 rooms (the user's 200, of them 10 direct rooms, and 50 others),
interleaved as busy rooms are, 50 authors, every 20th message mentioning the
user. Where the user stands in their rooms: 150 rooms read up to the last 0 to
9 messages, 30 rooms 100 to 390 behind, 10 rooms 2,000 behind, and 10 direct
rooms read to the end. The figure is taken with the messages vacuumed (counts read the index alone), and again
as if none were (each unread message's row read). --unread-all times the worst case too: nothing ever read.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "presence_site.settings")

ROOMS_MINE = 200
DIRECT = 10
ROOMS_OTHER = 50
AUTHORS = 50
TARGET_MS = 20.0


def backend_cpu_ms() -> float:
    """CPU time used so far by this connection's PostgreSQL backend (a local server: /proc)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def timed(label: str, call, runs: int) -> list[float]:
    """Wall time of each call (p50, p95), and the CPU per call of this process and of PostgreSQL's backend.

    On a shared machine the wall time carries the other work's waits; the CPU
    per call is what the request costs on a core of its own.
    """
    for _ in range(5):
        call()  # warm: connections, caches, plans
    samples = []
    cpu_start, db_start = time.process_time(), backend_cpu_ms()
    for _ in range(runs):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    app_cpu = (time.process_time() - cpu_start) * 1000 / runs
    db_cpu = (backend_cpu_ms() - db_start) / runs
    samples.sort()
    p50, p95 = statistics.median(samples), samples[int(len(samples) * 0.95)]
    verdict = "within" if p95 < TARGET_MS else "OVER"
    print(
        f"{label:<52} p50 {p50:6.2f} ms   p95 {p95:6.2f} ms   ({verdict} the {TARGET_MS:g} ms target); "
        f"CPU per call: app {app_cpu:.1f} ms + PostgreSQL {db_cpu:.1f} ms"
    )
    return samples


def fill(messages: int) -> None:
    """Users, rooms, memberships and `messages` messages, once (a second run reuses them)."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from chat.models import Membership, Message, Room
    from chat.protocol import KIND_DIRECT, direct_slug

    User = get_user_model()
    if Message.objects.count() >= messages:
        return
    print(f"filling: {messages:,} messages in {ROOMS_MINE + ROOMS_OTHER} rooms ...", flush=True)
    started = time.perf_counter()
    with transaction.atomic():
        me = User.objects.create(username="bench")
        authors = User.objects.bulk_create(User(username=f"author{n}") for n in range(AUTHORS))
        public = Room.objects.bulk_create(
            Room(slug=f"room-{n}", title=f"Room {n}") for n in range(ROOMS_MINE - DIRECT + ROOMS_OTHER)
        )
        direct = Room.objects.bulk_create(
            Room(slug=direct_slug(me.pk, other.pk), title="direct", kind=KIND_DIRECT) for other in authors[:DIRECT]
        )
        Membership.objects.bulk_create(
            [Membership(room=room, user=me) for room in public[: ROOMS_MINE - DIRECT] + direct]
            + [Membership(room=room, user=other) for room, other in zip(direct, authors, strict=False)]
        )
        room_ids = [room.pk for room in public + direct]
        author_ids = [author.pk for author in authors]
        # One statement: interleaved rooms, rotating authors, times a second apart up to now.
        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO chat_message (room_id, author_id, body, sent_at, client_id, mentions)
                SELECT (%(rooms)s::bigint[])[1 + g %% %(nrooms)s],
                       (%(authors)s::bigint[])[1 + (g * 7) %% %(nauthors)s],
                       CASE WHEN g %% 20 = 0 THEN '@bench look at message ' || g
                            ELSE 'message ' || g || ' ' || repeat('x', 60) END,
                       now() - make_interval(secs => %(n)s - g),
                       'c' || g,
                       CASE WHEN g %% 20 = 0 THEN ' bench ' ELSE '' END
                FROM generate_series(1, %(n)s) AS g
                """,
                {
                    "rooms": room_ids,
                    "nrooms": len(room_ids),
                    "authors": author_ids,
                    "nauthors": len(author_ids),
                    "n": messages,
                },
            )
    print(f"filled in {time.perf_counter() - started:.0f} s", flush=True)


def vacuumed() -> float:
    """VACUUM the messages until the visibility map covers them (as autovacuum keeps an older table); the share."""
    from django.db import connection

    with connection.cursor() as cursor:
        for _ in range(10):
            # An autovacuum ANALYZE that started before the fill committed holds back what VACUUM may mark.
            cursor.execute("VACUUM ANALYZE chat_message")
            cursor.execute("ANALYZE chat_membership")
            cursor.execute(
                "SELECT relallvisible::float / greatest(relpages, 1) FROM pg_class WHERE relname = 'chat_message'"
            )
            share = cursor.fetchone()[0]
            if share >= 0.99:
                break
            time.sleep(1)
    return share


def place_markers(*, behind) -> None:
    """Put the user's read marker in each of their rooms `behind(index)` messages before its newest."""
    from chat.models import Membership, Message

    memberships = list(Membership.objects.filter(user__username="bench").select_related("room").order_by("room_id"))
    for index, membership in enumerate(memberships):
        back = behind(index, membership)
        ids = Message.objects.filter(room_id=membership.room_id).order_by("-id").values_list("id", flat=True)
        membership.last_read_id = 0 if back is None else (ids[back : back + 1].first() or 0)
    Membership.objects.bulk_update(memberships, ["last_read_id"], batch_size=500)


def realistic(index: int, membership) -> int:
    if membership.room.kind == "direct":
        return 0
    if index < 150:
        return index % 10
    if index < 180:
        return 100 + (index % 30) * 10
    return 2000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--explain", action="store_true", help="print the plan of the rooms query")
    parser.add_argument("--unread-all", action="store_true", help="also time the worst case: nothing ever read")
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from chat.models import Message
    from chat.selectors import rooms_of_user

    if connection.vendor != "postgresql":
        sys.exit("rooms_api.py measures PostgreSQL: run it under scripts/with-postgres")
    settings.DEBUG = False  # no query log
    call_command("migrate", verbosity=0)
    fill(args.messages)
    user = get_user_model().objects.get(username="bench")
    place_markers(behind=lambda index, membership: realistic(index, membership))
    visible = vacuumed()
    rows = rooms_of_user(user=user)
    print(
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; {visible:.0%} of the messages' pages "
        "all-visible (counts read the index alone)"
    )
    print(
        f"PostgreSQL {connection.pg_version // 10000}: {Message.objects.count():,} messages; "
        f"the user is in {len(rows)} rooms with {sum(r['unread'] for r in rows):,} unread, "
        f"{sum(r['mentions'] for r in rows):,} mentions"
    )
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    response = client.get("/api/rooms")
    assert response.status_code == 200 and len(response.json()["rooms"]) == ROOMS_MINE, response.status_code
    timed("GET /api/rooms (session, user, the one query, JSON)", lambda: client.get("/api/rooms"), args.runs)
    timed("rooms_of_user() alone", lambda: rooms_of_user(user=user), args.runs)
    # Recent messages sit on pages VACUUM has not reached yet: counting them reads each row's page.
    with connection.cursor() as cursor:
        cursor.execute("SET enable_indexonlyscan = off")
    timed("GET /api/rooms, every unread message's page read", lambda: client.get("/api/rooms"), args.runs)
    with connection.cursor() as cursor:
        cursor.execute("RESET enable_indexonlyscan")
    if args.explain:
        from chat.selectors import rooms_of_user_rows

        print(rooms_of_user_rows(user=user).explain(analyze=True, buffers=True))
    if args.unread_all:
        place_markers(behind=lambda index, membership: None)
        rows = rooms_of_user(user=user)
        print(f"worst case: nothing ever read, {sum(r['unread'] for r in rows):,} unread")
        timed("GET /api/rooms, nothing ever read", lambda: client.get("/api/rooms"), max(20, args.runs // 10))
        place_markers(behind=lambda index, membership: realistic(index, membership))


if __name__ == "__main__":
    main()
