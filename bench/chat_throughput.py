"""How many chat messages per second one room sustains on one Daphne process.

Starts one Daphne process (and, with --redis, a private redis-server for the
channel layer and the cache) against a scratch database, opens --receivers
sockets in one room and --senders sockets that send --messages each, keeping
--window messages unacknowledged per sender, and reports stored messages per
second and frames delivered per second once every receiver has every message.

    .venv/bin/python bench/chat_throughput.py [--redis] [--senders 4] [--receivers 20]
    DATABASE_CONN_MAX_AGE=60 scripts/with-postgres .venv/bin/python bench/chat_throughput.py --redis
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))


def prepare(env: dict[str, str], users: int) -> list[str]:
    """Migrate the scratch database, create the room and users; return their session cookies."""
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    from chat.models import Room
    from presence_site.testing import live_cookie

    Room.objects.get_or_create(slug="bench", defaults={"title": "bench"})
    model = get_user_model()
    cookies = []
    for i in range(users):
        user, _ = model.objects.get_or_create(username=f"bench{i}")
        cookies.append(live_cookie(user))
    return cookies


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(
    url: str, cookies: list[str], senders: int, receivers: int, messages: int, window: int, server_pid: int
) -> None:
    from websockets.asyncio.client import connect

    total = senders * messages
    origin = "http://localhost"
    sockets = [
        await connect(url, origin=origin, additional_headers={"Cookie": cookie}, max_queue=None)
        for cookie in cookies[: senders + receivers]
    ]
    for socket in sockets:
        while json.loads(await socket.recv())["type"] != "room.presence":
            pass
    done = asyncio.Event()
    received = [0] * len(sockets)
    progress = [asyncio.Event() for _ in sockets]
    latencies: list[float] = []
    sent_at: dict[str, float] = {}

    async def receive(index: int, socket) -> None:
        async for text in socket:
            frame = json.loads(text)
            if frame["type"] == "chat.message":
                received[index] += 1
                progress[index].set()
                if index == len(sockets) - 1 and frame["client_id"] in sent_at:
                    latencies.append(time.perf_counter() - sent_at[frame["client_id"]])
                if all(count >= total for count in received):
                    done.set()
            elif frame["type"] == "error":
                print("error frame:", frame, file=sys.stderr)

    async def send(index: int, socket) -> None:
        for i in range(messages):
            client_id = uuid.uuid4().hex
            sent_at[client_id] = time.perf_counter()
            await socket.send(json.dumps({"type": "chat.message", "body": f"message {i}", "client_id": client_id}))
            # Keep at most `window` unacknowledged: wait on the listener's count for this socket.
            while i - received[index] >= window:
                progress[index].clear()
                await progress[index].wait()

    readers = [asyncio.create_task(receive(i, s)) for i, s in enumerate(sockets)]
    start, cpu_start = time.perf_counter(), cpu_seconds(server_pid)
    await asyncio.gather(*(send(i, s) for i, s in enumerate(sockets[:senders])))
    await asyncio.wait_for(done.wait(), timeout=600)
    elapsed, cpu = time.perf_counter() - start, cpu_seconds(server_pid) - cpu_start
    latencies.sort()
    print(
        f"{total} messages, {senders} senders, {len(sockets)} sockets in the room: "
        f"{total / elapsed:.0f} messages/s stored and broadcast, "
        f"{total * len(sockets) / elapsed:.0f} frames/s delivered, "
        f"latency p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.0f} ms; "
        f"server CPU {cpu:.1f} s = {total / cpu:.0f} messages per CPU-second, "
        f"{cpu / (total * len(sockets)) * 1e6:.0f} µs per delivered frame"
    )
    for reader in readers:
        reader.cancel()
    for socket in sockets:
        await socket.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", action="store_true", help="use channels-redis and the Redis cache")
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--receivers", type=int, default=20)
    parser.add_argument("--messages", type=int, default=500, help="per sender")
    parser.add_argument("--window", type=int, default=10, help="unacknowledged messages per sender")
    args = parser.parse_args()

    from presence_site.testing import LiveServer, RedisServer

    scratch = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    env = {key: value for key, value in os.environ.items()}
    env.update(
        DJANGO_SETTINGS_MODULE="presence_site.settings",
        SQLITE_PATH=str(scratch / "bench.sqlite3"),
        CHAT_RATE_BURST="100000000",
        CHAT_RATE_PER_MINUTE="100000000",
        LOG_LEVEL="WARNING",
    )
    redis = None
    if args.redis:
        redis = RedisServer(scratch)
        redis.start()
        env["REDIS_URL"] = redis.url
    server = None
    try:
        cookies = prepare(env, args.senders + args.receivers)
        server = LiveServer(env, scratch / "daphne.log")
        asyncio.run(
            run(
                f"{server.ws}/ws/chat/bench/",
                cookies,
                args.senders,
                args.receivers,
                args.messages,
                args.window,
                server.process.pid,
            )
        )
    finally:
        if server is not None:
            server.stop()
        if redis is not None:
            redis.stop()


if __name__ == "__main__":
    main()
