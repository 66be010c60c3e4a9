"""Search times with a million messages in 50 rooms, on PostgreSQL, beside the 50 ms p95 target.

    scripts/with-postgres .venv/bin/python bench/search_query.py [--messages 1000000] [--runs 200]

Bodies are 4 to 16 words drawn from a 5,000-word vocabulary with a skewed (Zipf-like) frequency, so
one-word queries range from words in a few percent of all messages to words in a few dozen. Each
query goes through chat.selectors.message_search (the rooms rule, newest first, a page of 20),
as GET /api/search does. It migrates the database it is pointed at and adds rows to it: never point
it at real data.
"""

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "presence_site.settings")

VOCABULARY = 5000
TARGET_MS = 50


def vocabulary(rng: random.Random) -> list[str]:
    syllables = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "da", "ve", "zu", "ho", "ge", "bi", "fa", "qu"]
    words: set[str] = set()
    while len(words) < VOCABULARY:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def fill(messages: int, rooms: int, words: list[str]) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection

    from chat import search
    from chat.models import Room

    author, _ = get_user_model().objects.get_or_create(username="bench")
    room_ids = [
        Room.objects.get_or_create(slug=f"room-{n}", defaults={"title": f"room {n}"})[0].pk for n in range(rooms)
    ]
    with connection.cursor() as cursor:
        # The index is built once after the rows, as a restore would; the rows are made by the server.
        cursor.execute("DROP INDEX IF EXISTS chat_message_body_search")
        started = time.perf_counter()
        cursor.execute(
            """
            INSERT INTO chat_message (room_id, author_id, body, html, sent_at, client_id)
            SELECT (%(rooms)s::bigint[])[1 + (n %% %(room_count)s)], %(author)s,
                   (SELECT string_agg((%(words)s::text[])[1 + floor(power(random(), 3) * %(size)s)::int], ' ')
                      FROM generate_series(1, 4 + (n::bigint * 7919 %% 13)::int) AS w(i) WHERE n > 0),
                   '', now(), 'bench-' || n
              FROM generate_series(1, %(messages)s) AS s(n)
            """,
            {
                "rooms": room_ids,
                "room_count": len(room_ids),
                "author": author.pk,
                "words": words,
                "size": len(words),
                "messages": messages,
            },
        )
        print(f"filled {messages:,} messages in {time.perf_counter() - started:.0f} s")
        started = time.perf_counter()
        cursor.execute(search.PG_INDEX_SQL)
        cursor.execute("ANALYZE chat_message")
        print(f"GIN index built in {time.perf_counter() - started:.0f} s")


def timed(label: str, queries: list[str], user, runs: int) -> tuple[float, str]:
    from chat.selectors import message_search

    for q in queries[:5]:
        message_search(user=user, q=q, limit=20)  # warm
    samples, slowest = [], (0.0, "")
    for i in range(runs):
        q = queries[i % len(queries)]
        start = time.perf_counter()
        message_search(user=user, q=q, limit=20)
        samples.append((time.perf_counter() - start) * 1000)
        slowest = max(slowest, (samples[-1], q))
    samples.sort()
    p50, p95 = statistics.median(samples), samples[int(runs * 0.95)]
    verdict = "met" if p95 < TARGET_MS else "MISSED"
    print(f"{label:<36} p50 {p50:6.2f} ms   p95 {p95:6.2f} ms   (target p95 < {TARGET_MS} ms: {verdict})")
    return slowest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from chat.models import Message

    if connection.vendor != "postgresql":
        sys.exit("search_query.py measures PostgreSQL: run it through scripts/with-postgres")
    call_command("migrate", verbosity=0)
    rng = random.Random(14)
    words = vocabulary(rng)
    if Message.objects.count() < args.messages:
        fill(args.messages, args.rooms, words)
    user = get_user_model().objects.get(username="bench")
    total = Message.objects.count()
    print(f"{connection.vendor}: {total:,} messages in {args.rooms} rooms")
    # Words drawn as the bodies draw them: common ones often, rare ones seldom.
    draw = lambda: words[int(rng.random() ** 3 * len(words))]  # noqa: E731
    one = [draw() for _ in range(args.runs)]
    three = [" ".join(draw() for _ in range(3)) for _ in range(args.runs)]
    common = words[:3]
    slowest = [
        timed("one word", one, user, args.runs),
        timed("three words", three, user, args.runs),
        timed("one of the 3 most common words", common, user, args.runs),
    ]
    from chat.search import messages_matching

    for elapsed, q in slowest:
        matches = messages_matching(q).count()
        print(f"\nslowest: {q!r} ({elapsed:.1f} ms, {matches:,} matches)")
        print(messages_matching(q).order_by("-id").values("id")[:21].explain(analyze=True))


if __name__ == "__main__":
    main()
