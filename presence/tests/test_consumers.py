"""/ws/presence/ through the full ASGI stack, on the in-memory layer and on a real Redis."""

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.utils import timezone

from presence import protocol
from presence.models import Connection, UserPresence
from presence.services import connection_open, presence_sweep
from presence.sockets import TrackedSocket
from presence_site.testing import ORIGIN, HandshakeRefused, answers_ping, close_code, forgotten
from realtime import protocol as transport

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("layer")]


async def snapshot_of(communicator) -> dict:
    frame = await communicator.receive_json_from(timeout=5)
    assert frame["type"] == "presence.snapshot"
    return frame


def states(diff: dict) -> list[tuple[str, str]]:
    return [(entry["username"], entry["state"]) for entry in diff["states"]]


async def next_diff(communicator, timeout: float = 5) -> dict:
    frame = await communicator.receive_json_from(timeout=timeout)
    assert frame["type"] == "presence.diff", frame
    return frame


async def test_snapshot_lists_online_users_including_me(make_user, open_socket):
    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    bob_socket, *_ = await open_socket("/ws/presence/", bob)
    await snapshot_of(bob_socket)
    alice_socket, *_ = await open_socket("/ws/presence/", alice)
    snapshot = await snapshot_of(alice_socket)
    assert snapshot["online_count"] == 2
    assert [user["username"] for user in snapshot["users"]] == ["alice", "bob"]
    assert all(user["online"] and user["since"].endswith("Z") for user in snapshot["users"])


async def test_join_and_leave_are_announced_to_watchers(make_user, open_socket):
    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    watcher, *_ = await open_socket("/ws/presence/", alice)
    await snapshot_of(watcher)
    assert (await next_diff(watcher))["joins"][0]["username"] == "alice"  # my own arrival

    bob_socket, *_ = await open_socket("/ws/presence/", bob)
    diff = await next_diff(watcher)
    assert [j["username"] for j in diff["joins"]] == ["bob"]
    assert diff["leaves"] == [] and diff["online_count"] == 2

    await bob_socket.disconnect()
    diff = await next_diff(watcher)
    assert [leave["username"] for leave in diff["leaves"]] == ["bob"]
    assert diff["leaves"][0]["last_seen"].endswith("Z")
    assert diff["joins"] == [] and diff["online_count"] == 1


async def test_the_leave_is_announced_even_when_the_server_gives_up_on_the_closed_socket(
    make_user, open_socket, settings
):
    # Daphne cancels a socket's application 10 s after the socket closed; when
    # thousands close at once, their clean-up can still be queued by then.
    settings.PRESENCE_LEAVE_GRACE = 0.3
    # The sweep would find bob online with no socket, but only at its next round.
    settings.PRESENCE_HEARTBEAT_INTERVAL = 60
    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    watcher, *_ = await open_socket("/ws/presence/", alice)
    await snapshot_of(watcher)
    await next_diff(watcher)  # my own arrival
    bob_socket, *_ = await open_socket("/ws/presence/", bob)
    assert [join["username"] for join in (await next_diff(watcher))["joins"]] == ["bob"]

    await bob_socket.send_input({"type": "websocket.disconnect", "code": 1001})
    # Bob's socket is forgotten; his leave now waits out the grace, and the server cancels.
    assert await forgotten(bob)
    bob_socket.future.cancel()
    diff = await next_diff(watcher, timeout=10)
    assert [leave["username"] for leave in diff["leaves"]] == ["bob"] and diff["online_count"] == 1


async def test_a_sweep_leaves_a_pending_leave_to_the_process_of_the_socket_that_closed(
    make_user, open_socket, settings, monkeypatch
):
    # The closing socket's process settles the leave once the grace is over,
    # but it can be late (its database thread busy, the layer slow): the
    # heartbeat sweep of any process must not take that for a missed leave.
    settings.PRESENCE_LEAVE_GRACE = 0.3
    settings.PRESENCE_HEARTBEAT_INTERVAL = 60  # no sweep but the test's own
    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    watcher, *_ = await open_socket("/ws/presence/", alice)
    await snapshot_of(watcher)
    await next_diff(watcher)  # my own arrival
    bob_socket, *_ = await open_socket("/ws/presence/", bob)
    assert [join["username"] for join in (await next_diff(watcher))["joins"]] == ["bob"]

    late = asyncio.Event()
    closed = TrackedSocket.closed

    async def late_closed(socket) -> None:
        await closed(socket)
        await late.wait()

    monkeypatch.setattr(TrackedSocket, "closed", late_closed)
    await bob_socket.disconnect()
    assert await forgotten(bob)
    # The grace is over as far as the database can tell, and bob's process has not settled his leave yet.
    await database_sync_to_async(UserPresence.objects.filter(user=bob).update)(
        last_seen=timezone.now() - timedelta(seconds=1)
    )
    removed, leaves = await database_sync_to_async(presence_sweep)()
    assert (removed, leaves) == (0, []), "the sweep announced a leave still pending on bob's process"

    late.set()
    diff = await next_diff(watcher)
    assert [leave["username"] for leave in diff["leaves"]] == ["bob"] and diff["online_count"] == 1
    assert await watcher.receive_nothing(timeout=0.5)


async def test_second_tab_does_not_announce_join_and_closing_one_announces_nothing(make_user, open_socket):
    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    watcher, *_ = await open_socket("/ws/presence/", alice)
    await snapshot_of(watcher)
    await next_diff(watcher)

    first_tab, client, key = await open_socket("/ws/presence/", bob)
    assert [j["username"] for j in (await next_diff(watcher))["joins"]] == ["bob"]
    second_tab, *_ = await open_socket("/ws/presence/", session_key=key)
    await snapshot_of(second_tab)
    assert await watcher.receive_nothing(timeout=0.5)

    await second_tab.disconnect()
    assert await watcher.receive_nothing(timeout=0.5)
    await first_tab.disconnect()
    assert [leave["username"] for leave in (await next_diff(watcher))["leaves"]] == ["bob"]


async def test_two_devices_count_once(make_user, open_socket):
    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    watcher, *_ = await open_socket("/ws/presence/", alice)
    await snapshot_of(watcher)
    await next_diff(watcher)
    phone, *_ = await open_socket("/ws/presence/", bob)
    laptop, *_ = await open_socket("/ws/presence/", bob)
    assert [j["username"] for j in (await next_diff(watcher))["joins"]] == ["bob"]
    assert await watcher.receive_nothing(timeout=0.3)
    await phone.disconnect()
    assert await watcher.receive_nothing(timeout=0.3)
    snapshot = await snapshot_of((await open_socket("/ws/presence/", alice))[0])
    assert snapshot["online_count"] == 2


async def test_anonymous_socket_is_closed_with_4401_after_accept(open_socket):
    communicator, *_ = await open_socket("/ws/presence/")
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}
    assert await database_sync_to_async(Connection.objects.count)() == 0


@pytest.mark.parametrize("origin", ["http://evil.example", None, "null", "http://localhost.evil.example"])
async def test_foreign_origin_is_refused_at_the_handshake(make_user, open_socket, origin):
    alice = await database_sync_to_async(make_user)("alice")
    with pytest.raises(HandshakeRefused):
        await open_socket("/ws/presence/", alice, origin=origin)
    # The same user and session from the page's own origin gets in.
    socket, *_ = await open_socket("/ws/presence/", alice, origin=ORIGIN)
    assert (await socket.receive_json_from(timeout=5))["type"] == "presence.snapshot"


async def test_logout_closes_that_sessions_socket_and_other_device_stays_online(make_user, open_socket):
    # The close reaches the socket through its process's inbox.
    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    watcher, *_ = await open_socket("/ws/presence/", alice)
    await snapshot_of(watcher)
    await next_diff(watcher)
    laptop, laptop_client, _ = await open_socket("/ws/presence/", bob)
    phone, *_ = await open_socket("/ws/presence/", bob)
    await snapshot_of(laptop)
    await snapshot_of(phone)
    await next_diff(watcher)

    response = await sync_to_async(laptop_client.post)("/accounts/logout/")
    assert response.status_code == 302
    assert await close_code(laptop) == 4000
    assert await answers_ping(phone)
    assert await watcher.receive_nothing(timeout=0.3)  # bob is still online on his phone

    await phone.disconnect()
    assert [leave["username"] for leave in (await next_diff(watcher))["leaves"]] == ["bob"]


async def test_logout_of_last_socket_announces_the_leave(make_user, open_socket):
    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    watcher, *_ = await open_socket("/ws/presence/", alice)
    await snapshot_of(watcher)
    await next_diff(watcher)
    socket, client, _ = await open_socket("/ws/presence/", bob)
    await next_diff(watcher)
    await sync_to_async(client.post)("/accounts/logout/")
    assert await close_code(socket) == 4000
    assert [leave["username"] for leave in (await next_diff(watcher))["leaves"]] == ["bob"]


async def test_socket_of_a_logged_out_session_is_refused(make_user, open_socket):
    bob = await database_sync_to_async(make_user)("bob")
    socket, client, key = await open_socket("/ws/presence/", bob)
    await snapshot_of(socket)
    await sync_to_async(client.post)("/accounts/logout/")
    assert await close_code(socket) == 4000
    copied, *_ = await open_socket("/ws/presence/", session_key=key)
    assert await copied.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}


async def test_stale_connection_is_swept_and_announced_offline(make_user, open_socket, settings):
    settings.PRESENCE_TTL = 1
    settings.PRESENCE_HEARTBEAT_INTERVAL = 0.2
    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    # bob's socket lives on a process that then dies: nobody refreshes it.
    await database_sync_to_async(connection_open)(
        user=bob, channel_name="specific.dead!1", server="dead-host:1:0", endpoint="presence"
    )
    watcher, *_ = await open_socket("/ws/presence/", alice)
    snapshot = await snapshot_of(watcher)
    assert {u["username"] for u in snapshot["users"]} == {"alice", "bob"}
    leaves = []
    while not leaves:
        leaves = (await next_diff(watcher, timeout=5))["leaves"]
    assert [leave["username"] for leave in leaves] == ["bob"]
    assert not await database_sync_to_async(Connection.objects.filter(user=bob).exists)()
    # alice's own socket is refreshed by her process's heartbeat and survives the sweeps.
    assert await database_sync_to_async(Connection.objects.filter(user=alice).exists)()


async def test_ping_gets_pong(make_user, open_socket):
    socket, *_ = await open_socket("/ws/presence/", await database_sync_to_async(make_user)("alice"))
    await snapshot_of(socket)
    await socket.send_json_to({"type": "ping"})
    frame = await socket.receive_json_from(timeout=5)
    while frame["type"] == "presence.diff":  # her own join may be announced first
        frame = await socket.receive_json_from(timeout=5)
    assert frame == {"type": "pong"}


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "invalid"),
        ("42", "invalid"),
        ('"ping"', "invalid"),
        ("null", "invalid"),
        ("{}", "invalid"),
        ('{"type": 7}', "invalid"),
        ('{"type": "no.such.frame", "body": "hi"}', "unknown_type"),
        ('{"type": "websocket.disconnect"}', "unknown_type"),
        ('{"type": "frame.forward", "text": "{}"}', "unknown_type"),
        ('{"type": "session.end"}', "unknown_type"),
        ('{"type": "__init__"}', "unknown_type"),
        ('{"type": "presence.state"}', "invalid"),
        ('{"type": "presence.state", "state": "asleep"}', "invalid"),
        ('{"type": "presence.state", "state": ["idle"]}', "invalid"),
    ],
)
async def test_bad_frames_get_an_error_and_the_socket_stays_open(make_user, open_socket, text, code):
    socket, *_ = await open_socket("/ws/presence/", await database_sync_to_async(make_user)("alice"))
    await snapshot_of(socket)
    await next_diff(socket)  # my own arrival
    await socket.send_to(text_data=text)
    frame = await socket.receive_json_from(timeout=5)
    assert frame["type"] == "error" and frame["code"] == code and frame["detail"]
    await socket.send_json_to({"type": "ping"})
    frame = await socket.receive_json_from(timeout=5)
    while frame["type"] == "presence.diff":  # her own join may be announced first
        frame = await socket.receive_json_from(timeout=5)
    assert frame == {"type": "pong"}


async def test_binary_frame_is_closed_with_1003(make_user, open_socket):
    socket, *_ = await open_socket("/ws/presence/", await database_sync_to_async(make_user)("alice"))
    await snapshot_of(socket)
    await socket.send_to(bytes_data=b"\x00\x01")
    assert await close_code(socket) == transport.CLOSE_UNSUPPORTED_DATA


async def test_oversized_frame_is_closed_with_1009(make_user, open_socket):
    socket, *_ = await open_socket("/ws/presence/", await database_sync_to_async(make_user)("alice"))
    await snapshot_of(socket)
    await socket.send_to(text_data='{"type":"ping","pad":"' + "é" * 40000 + '"}')
    assert await close_code(socket) == transport.CLOSE_TOO_LARGE


async def test_diffs_are_coalesced_in_a_burst(make_user, open_socket, settings):
    settings.PRESENCE_COALESCE_WINDOW = 0.25
    users = await database_sync_to_async(lambda: [make_user(f"user{i}") for i in range(8)])()
    watcher, *_ = await open_socket("/ws/presence/", users[0])
    await snapshot_of(watcher)
    await next_diff(watcher)
    loop = asyncio.get_running_loop()

    async def arrive() -> None:
        for user in users[1:]:
            await open_socket("/ws/presence/", user)

    # Open the sockets while the watcher reads, so arrival times are true.
    arriving = asyncio.create_task(arrive())
    seen: set[str] = set()
    arrivals = []
    while len(seen) < 7:
        diff = await next_diff(watcher)
        arrivals.append(loop.time())
        seen.update(j["username"] for j in diff["joins"])
    await arriving
    assert seen == {f"user{i}" for i in range(1, 8)}
    assert diff["online_count"] == 8
    # At most one diff per window, however the joins were spread in time.
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
    assert all(gap > 0.2 for gap in gaps), gaps
    assert len(arrivals) < 7


async def test_reload_within_grace_does_not_flicker(make_user, open_socket, settings):
    settings.PRESENCE_LEAVE_GRACE = 0.5
    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    watcher, *_ = await open_socket("/ws/presence/", alice)
    await snapshot_of(watcher)
    await next_diff(watcher)
    old_page, _, key = await open_socket("/ws/presence/", bob)
    await next_diff(watcher)
    closing = old_page.disconnect(timeout=3)
    new_page, *_ = await open_socket("/ws/presence/", session_key=key)
    await closing
    await snapshot_of(new_page)
    assert await watcher.receive_nothing(timeout=1.0)


async def test_stale_rows_of_a_dead_process_do_not_hide_a_new_join(make_user, open_socket, settings):
    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    await database_sync_to_async(connection_open)(
        user=bob, channel_name="specific.dead!2", server="dead-host:2:0", endpoint="presence"
    )
    long_ago = timezone.now() - timedelta(seconds=settings.PRESENCE_TTL * 2)
    await database_sync_to_async(Connection.objects.filter(user=bob).update)(heartbeat_at=long_ago)
    watcher, *_ = await open_socket("/ws/presence/", alice)
    assert [u["username"] for u in (await snapshot_of(watcher))["users"]] == ["alice"]
    await next_diff(watcher)
    await open_socket("/ws/presence/", bob)
    joins = []
    while not joins:
        diff = await next_diff(watcher)
        joins = [j["username"] for j in diff["joins"]]
    assert joins == ["bob"]


async def set_state(socket, state: str) -> None:
    """Send a presence.state frame and wait until the server has handled it (the pong follows it)."""
    await socket.send_json_to({"type": "presence.state", "state": state})
    assert await answers_ping(socket)


async def test_user_is_away_only_when_every_socket_is_idle(make_user, open_socket):
    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    watcher, *_ = await open_socket("/ws/presence/", alice)
    await snapshot_of(watcher)
    await next_diff(watcher)
    laptop, client, key = await open_socket("/ws/presence/", bob)
    phone, *_ = await open_socket("/ws/presence/", session_key=key, client=client)
    assert [j["username"] for j in (await next_diff(watcher))["joins"]] == ["bob"]

    await set_state(laptop, "idle")
    assert await watcher.receive_nothing(timeout=0.3)  # the phone is still active
    await set_state(phone, "idle")
    diff = await next_diff(watcher)
    assert states(diff) == [("bob", "away")]
    assert diff["states"][0]["since"].endswith("Z")  # shown as "away since 14:05"
    assert diff["joins"] == [] and diff["leaves"] == [] and diff["online_count"] == 2

    late, *_ = await open_socket("/ws/presence/", alice)
    bob_entry = [u for u in (await snapshot_of(late))["users"] if u["username"] == "bob"]
    assert bob_entry[0]["idle"] is True

    await set_state(laptop, "active")
    assert states(await next_diff(watcher)) == [("bob", "online")]
    await set_state(laptop, "active")  # no change, no news
    assert await watcher.receive_nothing(timeout=0.3)


async def test_closing_the_only_active_socket_makes_the_user_away(make_user, open_socket):
    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    watcher, *_ = await open_socket("/ws/presence/", alice)
    await snapshot_of(watcher)
    await next_diff(watcher)
    hidden, client, key = await open_socket("/ws/presence/", bob)
    visible, *_ = await open_socket("/ws/presence/", session_key=key, client=client)
    await next_diff(watcher)
    await set_state(hidden, "idle")
    await visible.disconnect()
    assert states(await next_diff(watcher)) == [("bob", "away")]

    # A new active tab brings the user back without a second join.
    again, *_ = await open_socket("/ws/presence/", session_key=key, client=client)
    diff = await next_diff(watcher)
    assert states(diff) == [("bob", "online")] and diff["joins"] == []


async def test_leaving_while_away_announces_the_leave_only(make_user, open_socket):
    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    watcher, *_ = await open_socket("/ws/presence/", alice)
    await snapshot_of(watcher)
    await next_diff(watcher)
    socket, *_ = await open_socket("/ws/presence/", bob)
    await next_diff(watcher)
    await set_state(socket, "idle")
    assert states(await next_diff(watcher)) == [("bob", "away")]
    await socket.disconnect()
    diff = await next_diff(watcher)
    assert [leave["username"] for leave in diff["leaves"]] == ["bob"] and diff["states"] == []

    # Back later: online and active, not away.
    socket, *_ = await open_socket("/ws/presence/", bob)
    diff = await next_diff(watcher)
    assert [j["username"] for j in diff["joins"]] == ["bob"] and diff["states"] == []


async def test_snapshot_lists_the_recently_seen_for_a_resync(make_user, open_socket):
    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    bob_socket, *_ = await open_socket("/ws/presence/", bob)
    await snapshot_of(bob_socket)
    await bob_socket.disconnect()
    watcher, *_ = await open_socket("/ws/presence/", alice)
    snapshot = await snapshot_of(watcher)
    assert [user["username"] for user in snapshot["users"]] == ["alice"]
    assert [(r["username"], r["online"]) for r in snapshot["recent"]] == [("bob", False)]
    assert snapshot["recent"][0]["last_seen"].endswith("Z")


async def test_diffs_reach_watchers(make_user, open_socket):
    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    watcher, *_ = await open_socket("/ws/presence/", alice)
    await snapshot_of(watcher)
    await next_diff(watcher)
    await open_socket("/ws/presence/", bob)
    assert [j["username"] for j in (await next_diff(watcher))["joins"]] == ["bob"]


async def test_process_leaves_its_groups_with_its_last_socket(make_user, open_socket):
    from realtime.runtime import runtime

    fanout = runtime().fanout
    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    first, *_ = await open_socket("/ws/presence/", alice)
    second, *_ = await open_socket("/ws/presence/", bob)
    await snapshot_of(first)
    await snapshot_of(second)
    assert len(fanout.groups[protocol.PRESENCE_GROUP]) == 2
    await first.disconnect()
    assert protocol.PRESENCE_GROUP in fanout.groups
    await second.disconnect()
    assert fanout.groups == {}
    assert runtime().sockets == {} and fanout.inbox_task is None, "the inbox stops listening with the last socket"


async def test_a_frame_for_one_user_reaches_every_socket_of_theirs_and_nobody_else(make_user, open_socket):
    from presence.services import user_broadcast

    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    laptop, *_ = await open_socket("/ws/presence/", alice)
    phone, *_ = await open_socket("/ws/presence/", alice)
    other, *_ = await open_socket("/ws/presence/", bob)
    for socket in (laptop, phone, other):
        await snapshot_of(socket)
    frame = {"type": "just.for.alice", "n": 1}
    assert await sync_to_async(user_broadcast)(user_id=alice.pk, frame=frame, label="test")
    for socket in (laptop, phone):
        received = await socket.receive_json_from(timeout=5)
        while received["type"] == "presence.diff":
            received = await socket.receive_json_from(timeout=5)
        assert received == frame
    # Bob's socket: everything up to the answer to a ping sent after the broadcast.
    await other.send_json_to({"type": "ping"})
    seen = []
    while (received := await other.receive_json_from(timeout=5))["type"] != "pong":
        seen.append(received["type"])
    assert "just.for.alice" not in seen
