"""History query times with 100,000 messages in one room (and as many again in 20 other rooms, interleaved).

Run on PostgreSQL (a private, throw-away cluster):

    scripts/with-postgres .venv/bin/python bench/history_query.py [--messages 100000]

It migrates the database it is pointed at and adds rows to it: never point it at real data.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "presence_site.settings")


def timed(label: str, call, runs: int = 200) -> None:
    call()  # warm
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    print(f"{label:<48} median {statistics.median(samples):6.2f} ms   p99 {samples[int(runs * 0.99)]:6.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from chat.models import Message, Room
    from chat.selectors import room_history, room_messages_after

    call_command("migrate", verbosity=0)
    author, _ = get_user_model().objects.get_or_create(username="bench")
    # The room under test, and 20 others whose messages interleave with its own,
    # as they do when several rooms are busy at once.
    big = Room.objects.get_or_create(slug="big", defaults={"title": "big"})[0]
    others = [Room.objects.get_or_create(slug=f"noise-{n}", defaults={"title": "noise"})[0] for n in range(20)]
    if not Message.objects.exists():
        batch = 5000
        for start in range(0, 2 * args.messages, batch):
            Message.objects.bulk_create(
                Message(
                    room=big if i % 2 == 0 else others[i % 20],
                    author=author,
                    body=f"message {i} " + "x" * 80,
                    client_id=f"c{i}",
                )
                for i in range(start, min(start + batch, 2 * args.messages))
            )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE chat_message")
    ids = list(Message.objects.filter(room=big).order_by("id").values_list("id", flat=True))
    print(f"{connection.vendor}: {len(ids)} messages in the room, {Message.objects.count()} in all")
    timed("last 50 (connect, GET /messages)", lambda: room_history(room=big))
    timed("50 before the middle (scroll back)", lambda: room_history(room=big, before=ids[len(ids) // 2]))
    timed("50 before the first 100 (far back)", lambda: room_history(room=big, before=ids[100]))
    timed("500 after (resume, has_more)", lambda: room_messages_after(room=big, after=ids[-1000]))
    timed("20 after (resume after a short drop)", lambda: room_messages_after(room=big, after=ids[-20]))
    for query in (
        Message.objects.filter(room=big).order_by("-room_id", "-id").values("id")[:51],
        Message.objects.filter(room=big, id__gt=ids[-20]).order_by("room_id", "id").values("id")[:501],
    ):
        print(query.explain(analyze=True) if connection.vendor == "postgresql" else query.explain())


if __name__ == "__main__":
    main()
