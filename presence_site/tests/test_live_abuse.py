"""Raw hostile frames through a real Daphne with the production flags (--websocket-max-message-size 65536).

Each test talks to Daphne processes over real sockets with the `websockets`
client, which can send what a browser never would: binary and fragmented
frames, invalid UTF-8, no Origin, floods.
"""

import asyncio
import json
import statistics
import time
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from presence.models import Connection
from presence_site.testing import SOCKET_ENDPOINTS, live_cookie

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def origin_of(server) -> str:
    return server.http


def open_ws(server, path: str, cookie: str | None, *, origin: str | None = "same", **kwargs):
    headers = {"Cookie": cookie} if cookie else {}
    return connect(
        server.ws + path,
        origin=origin_of(server) if origin == "same" else origin,
        additional_headers=headers,
        max_size=None,
        ping_interval=None,
        open_timeout=10,
        close_timeout=5,
        **kwargs,
    )


async def until_pong(ws) -> float:
    """Send a ping frame; return the seconds until its pong (other frames skipped)."""
    started = time.perf_counter()
    await ws.send('{"type":"ping"}')
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
        if frame["type"] == "pong":
            return time.perf_counter() - started


async def closed_with(ws) -> int:
    """Read until the server closes the socket; return its close code (1006: dropped without one)."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout=10)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else 1006


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
async def users(make_user):
    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    cookies = await database_sync_to_async(lambda: (live_cookie(alice), live_cookie(bob)))()
    return cookies


@pytest.fixture
def server(live_server_factory):
    return live_server_factory(LOG_LEVEL="INFO")


@pytest.mark.parametrize("path", SOCKET_ENDPOINTS)
async def test_binary_frame_is_closed_with_1003_and_logged(server, users, path):
    alice, _ = users
    async with open_ws(server, path, alice) as ws:
        await until_pong(ws)
        await ws.send(b"\x00\x01binary")
        assert await closed_with(ws) == 1003
    output = server.output()
    assert "code=1003 reason=binary frame user=alice" in output and "address=127.0.0.1" in output


@pytest.mark.parametrize("path", SOCKET_ENDPOINTS)
async def test_an_oversized_frame_is_refused_and_the_server_keeps_serving(server, users, path):
    alice, bob = users
    async with open_ws(server, path, bob) as bystander:
        await until_pong(bystander)
        async with open_ws(server, path, alice) as ws:
            await until_pong(ws)
            await ws.send('{"type":"ping","pad":"' + "x" * 70000 + '"}')
            # Daphne fails the socket with 1009; the client may see the TCP reset first (1006).
            assert await closed_with(ws) in {1009, 1006}
        await until_pong(bystander)


@pytest.mark.parametrize("path", SOCKET_ENDPOINTS)
async def test_an_oversized_message_in_many_continuation_frames_is_dropped_with_memory_flat(server, users, path):
    alice, bob = users
    async with open_ws(server, path, bob) as bystander:
        await until_pong(bystander)
        before = rss_kib(server.process.pid)
        for _ in range(20):
            async with open_ws(server, path, alice) as ws:
                await until_pong(ws)
                # 1 MiB in 1,024 fragments of 1 KiB: no single frame is large.
                fragments = ('{"type":"ping","pad":"' if i == 0 else "y" * 1024 for i in range(1024))
                try:
                    await ws.send(fragments)
                except ConnectionClosed:
                    pass  # the server failed the socket mid-message, as it should
                assert await closed_with(ws) in {1009, 1006}
        after = rss_kib(server.process.pid)
        await until_pong(bystander)
    # 20 MiB were sent; had Daphne buffered them, its memory would have grown by that much.
    assert after - before < 8 * 1024, f"Daphne grew by {after - before} KiB"


@pytest.mark.parametrize("path", SOCKET_ENDPOINTS)
async def test_invalid_utf8_fails_the_socket_in_daphne(server, users, path):
    alice, bob = users
    async with open_ws(server, path, bob) as bystander:
        await until_pong(bystander)
        async with open_ws(server, path, alice) as ws:
            await until_pong(ws)
            await ws.send(b'{"type":"ping","x":"\xff\xfe\xc3"}', text=True)
            # Autobahn fails the socket (1007) by dropping it, so the client sees 1006;
            # the frame never reaches the application.
            assert await closed_with(ws) in {1007, 1006}
        await until_pong(bystander)


@pytest.mark.parametrize("path", SOCKET_ENDPOINTS)
@pytest.mark.parametrize("origin", ["http://evil.example", None, "null", "http://127.0.0.1.evil.example"])
async def test_a_bad_origin_is_refused_at_the_handshake_with_403(server, users, path, origin):
    alice, _ = users
    with pytest.raises(InvalidStatus) as refused:
        async with open_ws(server, path, alice, origin=origin):
            pass
    assert refused.value.response.status_code == 403
    output = server.output()
    assert "refused handshake: reason=origin not allowed" in output and "address=127.0.0.1" in output
    assert alice.split("=", 1)[1] not in output  # the session key is never logged


@pytest.mark.parametrize("path", SOCKET_ENDPOINTS)
async def test_a_flood_of_1000_frames_is_limited_then_closed_and_others_are_not_slowed(server, users, path):
    alice, bob = users
    async with open_ws(server, path, bob) as bystander, open_ws(server, path, alice) as flooder:
        await until_pong(bystander)
        await until_pong(flooder)
        baseline = [await until_pong(bystander) for _ in range(5)]

        during: list[float] = []
        flood_done = asyncio.Event()

        async def measure() -> None:
            # Eight pings a second, under the per-socket limit of ten, until
            # a little after the flooder was closed.
            after = 0
            while after < 3:
                during.append(await until_pong(bystander))
                after += flood_done.is_set()
                await asyncio.sleep(0.125)

        measuring = asyncio.create_task(measure())
        started = time.perf_counter()
        try:
            for _ in range(1000):
                await flooder.send('{"type":"ping"}')
        except ConnectionClosed:
            pass
        sent_in = time.perf_counter() - started
        answers: list[dict] = []
        try:
            while True:
                answers.append(json.loads(await asyncio.wait_for(flooder.recv(), timeout=10)))
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
        flood_done.set()
        await measuring

    assert sent_in < 1.0
    assert code == 1008
    codes = [a.get("code") for a in answers if a["type"] == "error"]
    assert codes and set(codes) == {"rate_limited"}
    assert len(codes) == 10  # SOCKET_FLOOD_STRIKES
    print(
        f"\nflood: 1000 frames sent in {sent_in * 1000:.0f} ms; {len(answers)} answers then 1008; "
        f"bystander ping p50 {statistics.median(baseline) * 1000:.1f} ms before, "
        f"p50 {statistics.median(during) * 1000:.1f} ms / max {max(during) * 1000:.1f} ms during ({len(during)} pings)"
    )
    assert max(during) < 0.5


@pytest.mark.parametrize("path", SOCKET_ENDPOINTS)
async def test_a_protocol_ping_flood_is_answered_by_daphne_and_others_are_not_slowed(server, users, path):
    alice, bob = users
    async with open_ws(server, path, bob) as bystander, open_ws(server, path, alice) as flooder:
        await until_pong(bystander)
        baseline = [await until_pong(bystander) for _ in range(5)]
        started = time.perf_counter()
        waiters = [await flooder.ping() for _ in range(1000)]
        during = [await until_pong(bystander) for _ in range(5)]
        await asyncio.wait_for(asyncio.gather(*waiters), timeout=20)
        answered_in = time.perf_counter() - started
        # The flooder's socket is still a working socket: control pings are protocol-legal.
        await until_pong(flooder)
    print(
        f"\nping flood: 1000 control pings answered in {answered_in * 1000:.0f} ms; bystander p50 "
        f"{statistics.median(baseline) * 1000:.1f} ms before, max {max(during) * 1000:.1f} ms during"
    )
    assert max(during) < 0.5


@pytest.mark.parametrize("path", SOCKET_ENDPOINTS)
async def test_the_per_user_socket_limit_holds_across_processes(live_server_factory, users, path):
    alice, _ = users
    servers = [live_server_factory(SOCKET_MAX_PER_USER="4"), live_server_factory(SOCKET_MAX_PER_USER="4")]

    async def one(server):
        ws = await open_ws(server, path, alice)
        try:
            await until_pong(ws)
            return ws, None
        except ConnectionClosed as closed:
            return ws, closed.rcvd.code if closed.rcvd else None

    results = await asyncio.gather(*(one(servers[i % 2]) for i in range(8)))
    try:
        codes = [code for _, code in results]
        assert codes.count(4429) == 4 and codes.count(None) == 4
        assert await database_sync_to_async(Connection.objects.count)() == 4
    finally:
        for ws, _ in results:
            await ws.close()
