"""Two real Daphne processes sharing one Redis and one database, driven by a real WebSocket client."""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import connect

from chat.models import Message, Room
from presence_site.testing import ORIGIN, live_cookie

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


async def frame_of(socket, frame_type: str, timeout: float = 10) -> dict:
    """The next frame of one type, skipping others (room.presence updates)."""
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await socket.recv())
            if frame["type"] == frame_type:
                return frame


async def silent(socket, timeout: float = 0.5) -> list[dict]:
    """Frames other than room.presence that arrive within a short wait."""
    seen = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                frame = json.loads(await socket.recv())
                if frame["type"] != "room.presence":
                    seen.append(frame)
    except TimeoutError:
        return seen


async def test_two_processes_share_messages_and_typing_but_not_across_rooms(live_server_factory, make_user):
    def setup():
        Room.objects.create(slug="lobby", title="Lobby")
        Room.objects.create(slug="other", title="Other")
        return [live_cookie(make_user(name)) for name in ("alice", "bob", "carol")]

    alice_cookie, bob_cookie, carol_cookie = await database_sync_to_async(setup)()
    first, second = live_server_factory(), live_server_factory()

    def open_(server, cookie, slug):
        return connect(f"{server.ws}/ws/chat/{slug}/", origin=ORIGIN, additional_headers={"Cookie": cookie})

    async with (
        open_(first, alice_cookie, "lobby") as alice,
        open_(second, bob_cookie, "lobby") as bob,
        open_(second, carol_cookie, "other") as carol,
    ):
        for socket in (alice, bob, carol):
            assert (await frame_of(socket, "chat.history"))["messages"] == []
        # Bob's arrival, seen on the other process.
        async with asyncio.timeout(10):
            while (await frame_of(alice, "room.presence"))["users"] != ["alice", "bob"]:
                pass

        await alice.send(json.dumps({"type": "chat.message", "body": "hi from process one", "client_id": "a-1"}))
        sent = await frame_of(alice, "chat.message")
        assert await frame_of(bob, "chat.message") == sent
        await bob.send(json.dumps({"type": "chat.message", "body": "hi back from two", "client_id": "b-1"}))
        reply = await frame_of(alice, "chat.message")
        assert reply["username"] == "bob" and reply["body"] == "hi back from two" and reply["id"] > sent["id"]

        await bob.send(json.dumps({"type": "chat.typing"}))
        assert await frame_of(alice, "chat.typing") == {"type": "chat.typing", "username": "bob"}

        assert await silent(carol) == []
        bob_seen = await silent(bob)
        assert [f["type"] for f in bob_seen] == ["chat.message"]  # his own, no typing echo

    assert await database_sync_to_async(Message.objects.count)() == 2


async def test_a_history_larger_than_the_client_frame_limit_reaches_the_client(live_server_factory, make_user):
    # Daphne runs with --websocket-max-message-size 65536, for what clients send; the
    # server's own frames may be larger: 50 messages of 2,000 four-byte characters.
    body = "😀" * 2000

    def setup():
        room = Room.objects.create(slug="long-reads", title="Long reads")
        alice = make_user("alice")
        Message.objects.bulk_create(Message(room=room, author=alice, body=body, client_id=f"c{i}") for i in range(50))
        return live_cookie(alice)

    cookie = await database_sync_to_async(setup)()
    server = live_server_factory()
    headers = {"Cookie": cookie, "Origin": server.http}
    async with connect(f"{server.ws}/ws/chat/long-reads/", additional_headers=headers, max_size=2**21) as socket:
        history = await frame_of(socket, "chat.history")
        assert len(history["messages"]) == 50
        assert all(message["body"] == body for message in history["messages"])
        await socket.send(json.dumps({"type": "ping"}))
        assert (await frame_of(socket, "pong"))["type"] == "pong"
