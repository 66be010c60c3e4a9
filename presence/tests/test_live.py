"""Presence across real Daphne processes sharing one Redis and one database."""

import asyncio
import signal

import pytest
from channels.db import database_sync_to_async

from presence_site.testing import LiveSocket, live_cookie

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def joined(name: str):
    return lambda f: f["type"] == "presence.diff" and any(j["username"] == name for j in f["joins"])


def left(name: str):
    return lambda f: f["type"] == "presence.diff" and any(item["username"] == name for item in f["leaves"])


def leaves_in(frames: list[dict]) -> list[str]:
    return [item["username"] for f in frames if f["type"] == "presence.diff" for item in f["leaves"]]


async def cookies(make_user, *names: str) -> list[str]:
    return await database_sync_to_async(lambda: [live_cookie(make_user(name)) for name in names])()


async def test_user_on_the_second_process_appears_to_a_watcher_on_the_first(live_server_factory, make_user):
    first, second = live_server_factory(), live_server_factory()
    alice, bob = await cookies(make_user, "alice", "bob")
    watcher = await LiveSocket.open(first, "/ws/presence/", alice)
    assert (await watcher.receive())["type"] == "presence.snapshot"
    bob_socket = await LiveSocket.open(second, "/ws/presence/", bob)
    snapshot = await bob_socket.receive()
    assert [u["username"] for u in snapshot["users"]] == ["alice", "bob"]
    frames = await watcher.receive_until(joined("bob"))
    assert frames[-1]["online_count"] == 2

    await bob_socket.close()
    frames = await watcher.receive_until(left("bob"))
    assert frames[-1]["online_count"] == 1
    await watcher.close()


async def test_two_tabs_closing_at_once_on_two_processes_announce_one_leave(live_server_factory, make_user):
    first, second = live_server_factory(), live_server_factory()
    alice, bob = await cookies(make_user, "alice", "bob")
    watcher = await LiveSocket.open(first, "/ws/presence/", alice)
    await watcher.receive()
    tab_one = await LiveSocket.open(first, "/ws/presence/", bob)
    tab_two = await LiveSocket.open(second, "/ws/presence/", bob)
    await watcher.receive_until(joined("bob"))

    await asyncio.gather(tab_one.close(), tab_two.close())
    frames = await watcher.receive_until(left("bob"))
    # Anything more about bob would come within the grace (0.3 s) and the coalescing window.
    with pytest.raises(TimeoutError):
        frames += await watcher.receive_until(lambda f: True, timeout=1.5)
    assert leaves_in(frames) == ["bob"]
    await watcher.close()


async def test_two_tabs_opening_at_once_on_two_processes_announce_one_join(live_server_factory, make_user):
    first, second = live_server_factory(), live_server_factory()
    alice, bob = await cookies(make_user, "alice", "bob")
    watcher = await LiveSocket.open(first, "/ws/presence/", alice)
    await watcher.receive()
    await watcher.receive_until(joined("alice"))
    tabs = await asyncio.gather(
        LiveSocket.open(first, "/ws/presence/", bob), LiveSocket.open(second, "/ws/presence/", bob)
    )
    frames = await watcher.receive_until(joined("bob"))
    with pytest.raises(TimeoutError):
        frames += await watcher.receive_until(lambda f: True, timeout=1.0)
    joins = [j["username"] for f in frames if f["type"] == "presence.diff" for j in f["joins"]]
    assert joins == ["bob"]
    for tab in (*tabs, watcher):
        await tab.close()


async def test_killed_process_leaves_no_ghost_beyond_the_ttl(live_server_factory, make_user):
    survivor, doomed = live_server_factory(), live_server_factory()
    alice, bob, carol = await cookies(make_user, "alice", "bob", "carol")
    watcher = await LiveSocket.open(survivor, "/ws/presence/", alice)
    await watcher.receive()
    carol_socket = await LiveSocket.open(survivor, "/ws/presence/", carol)
    await LiveSocket.open(doomed, "/ws/presence/", bob)
    await LiveSocket.open(doomed, "/ws/presence/", carol)  # carol also has a tab on the other process
    await watcher.receive_until(joined("bob"))

    loop = asyncio.get_running_loop()
    doomed.kill()
    killed_at = loop.time()
    # TTL 4 s and heartbeat 1 s in the live servers: bob is gone within about 5 s.
    frames = await watcher.receive_until(left("bob"), timeout=10)
    healed = loop.time() - killed_at
    assert leaves_in(frames) == ["bob"]  # carol, still online on the survivor, does not flicker
    assert 3 < healed < 7
    snapshot_socket = await LiveSocket.open(survivor, "/ws/presence/", alice)
    snapshot = await snapshot_socket.receive()
    assert [u["username"] for u in snapshot["users"]] == ["alice", "carol"]
    for socket in (watcher, carol_socket, snapshot_socket):
        await socket.close()


async def closed_with(socket: LiveSocket, timeout: float = 10.0) -> int:
    """Read until the server closes the socket; return its close code."""
    from websockets.exceptions import ConnectionClosed

    async with asyncio.timeout(timeout):
        try:
            while True:
                await socket.connection.recv()
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else 1006


async def frames_for(socket: LiveSocket, seconds: float) -> list[dict]:
    """Every frame the socket gets in the next `seconds`."""
    frames: list[dict] = []
    with pytest.raises(TimeoutError):
        await socket.receive_until(lambda f: frames.append(f) and False, timeout=seconds)
    return frames


async def exit_code(server, timeout: float = 15.0) -> int:
    return await asyncio.wait_for(asyncio.to_thread(server.process.wait), timeout)


async def test_a_restarted_process_hands_its_users_over_without_a_flicker(live_server_factory, make_user):
    survivor, restarting = live_server_factory(), live_server_factory(SHUTDOWN_DRAIN="1")
    alice, bob, carol = await cookies(make_user, "alice", "bob", "carol")
    watcher = await LiveSocket.open(survivor, "/ws/presence/", alice)
    await watcher.receive()
    bob_socket = await LiveSocket.open(restarting, "/ws/presence/", bob)
    carol_socket = await LiveSocket.open(restarting, "/ws/presence/", carol)
    await watcher.receive_until(joined("carol"))

    restarting.process.send_signal(signal.SIGTERM)
    assert await closed_with(bob_socket) == 1012
    assert await closed_with(carol_socket) == 1012
    # As a page does on 1012: back at once, here to the other process behind the load balancer.
    bob_back = await LiveSocket.open(survivor, "/ws/presence/", bob)
    carol_back = await LiveSocket.open(survivor, "/ws/presence/", carol)
    assert await exit_code(restarting) == 0
    frames = await frames_for(watcher, 1.5)
    assert leaves_in(frames) == [], frames
    assert not any("Traceback" in line for line in restarting.output().splitlines())
    for socket in (watcher, bob_back, carol_back):
        await socket.close()


async def test_a_stopping_process_announces_the_leave_of_a_user_who_does_not_come_back(live_server_factory, make_user):
    survivor, stopping = live_server_factory(), live_server_factory(SHUTDOWN_DRAIN="1")
    alice, bob = await cookies(make_user, "alice", "bob")
    watcher = await LiveSocket.open(survivor, "/ws/presence/", alice)
    await watcher.receive()
    bob_socket = await LiveSocket.open(stopping, "/ws/presence/", bob)
    await watcher.receive_until(joined("bob"))

    stopping.process.send_signal(signal.SIGTERM)
    assert await closed_with(bob_socket) == 1012
    frames = await watcher.receive_until(left("bob"), timeout=10)
    assert leaves_in(frames) == ["bob"]
    assert await exit_code(stopping) == 0
    await watcher.close()
