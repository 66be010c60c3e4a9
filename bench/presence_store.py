"""Where presence state lives: the costs of the database store, beside the same work on Redis.

Prints, for the configured database (SQLite by default; set DATABASE_URL for
PostgreSQL): the time to open and close a socket (the locked transitions), one
process's heartbeat over N sockets, a sweep with nothing stale, and a snapshot
of N online users; then the nearest Redis equivalents (a pipeline per open and
close, a sorted-set refresh, a snapshot read) on REDIS_URL or a private
redis-server. Run: .venv/bin/python bench/presence_store.py [N]
"""

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "presence_site.settings")
if not os.environ.get("DATABASE_URL"):
    os.environ["SQLITE_PATH"] = str(Path(tempfile.mkdtemp()) / "bench.sqlite3")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from presence.models import Connection, UserPresence  # noqa: E402
from presence.selectors import presence_online_users  # noqa: E402
from presence.services import connection_close, connection_heartbeat, connection_open, presence_settle, presence_sweep  # noqa: E402
from presence_site.testing import RedisServer  # noqa: E402


def timed(fn, repeat: int = 1) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def report(label: str, samples: list[float]) -> None:
    p50 = statistics.median(samples)
    p95 = sorted(samples)[int(len(samples) * 0.95) - 1] if len(samples) > 1 else samples[0]
    print(f"  {label:<46} p50 {p50:8.3f} ms   p95 {p95:8.3f} ms   (n={len(samples)})")


def database(n: int) -> None:
    call_command("migrate", verbosity=0)
    if connection.vendor == "postgresql":
        call_command("flush", interactive=False, verbosity=0)
    User = get_user_model()
    users = User.objects.bulk_create([User(username=f"bench{i:05d}") for i in range(n)])
    print(f"database: {connection.vendor}, {n} users")
    opens = []
    for i, user in enumerate(users):
        opens += timed(lambda: connection_open(user=user, channel_name=f"c{i}", server="bench", endpoint="presence"))
    report("socket open (join, locked transition)", opens)
    report("heartbeat of one process over all its sockets", timed(lambda: connection_heartbeat(server="bench"), 20))
    report("sweep with nothing stale", timed(presence_sweep, 20))
    report(f"snapshot of {n} online users", timed(presence_online_users, 20))
    closes = []
    for i, user in enumerate(users):
        closes += timed(lambda: (connection_close(channel_name=f"c{i}"), presence_settle(user_id=user.pk)))
    report("socket close + settle (leave)", closes)
    Connection.objects.all().delete()
    UserPresence.objects.all().delete()
    User.objects.filter(username__startswith="bench").delete()


def redis_equivalent(n: int) -> None:
    import redis

    server = None
    url = os.environ.get("REDIS_URL")
    if not url:
        server = RedisServer(Path(tempfile.mkdtemp()))
        server.start()
        url = server.url
    try:
        client = redis.Redis.from_url(url)
        client.flushdb()
        print(f"redis: {url}")

        def open_(i: int) -> None:
            pipe = client.pipeline()
            pipe.zadd("sockets", {f"c{i}": time.time()})
            pipe.hincrby("counts", f"u{i}", 1)
            pipe.execute()

        def close_(i: int) -> None:
            pipe = client.pipeline()
            pipe.zrem("sockets", f"c{i}")
            pipe.hincrby("counts", f"u{i}", -1)
            pipe.execute()

        opens = []
        for i in range(n):
            opens += timed(lambda: open_(i))
        report("socket open (pipeline of 2)", opens)
        report(
            "heartbeat: re-score all sockets",
            timed(lambda: client.zadd("sockets", {f"c{i}": time.time() for i in range(n)}), 20),
        )
        report(f"snapshot of {n} online users", timed(lambda: client.hgetall("counts"), 20))
        closes = []
        for i in range(n):
            closes += timed(lambda: close_(i))
        report("socket close (pipeline of 2)", closes)
        client.flushdb()
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    database(count)
    redis_equivalent(count)
