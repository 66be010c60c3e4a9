"""A room whose fan-out falls behind refuses new messages, through the full ASGI stack on both layers."""

import asyncio
import copy

import pytest
from channels.db import database_sync_to_async

from chat.models import Message
from chat.tests.test_consumers import join, next_of, say
from presence_site.testing import answers_ping
from realtime.runtime import runtime

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("layer")]


@pytest.fixture
async def people(make_user, make_room):
    def create():
        make_room("lobby")
        return make_user("alice"), make_user("bob")

    return await database_sync_to_async(create)()


def hold_writes(username: str) -> asyncio.Event:
    """Hold every frame to a user's sockets on this process until the returned event is set (a reader that stalls)."""
    gate = asyncio.Event()
    sockets = [s for s in runtime().sockets.values() if s.scope["user"].get_username() == username]
    assert sockets
    for socket in sockets:
        write = socket.base_send

        async def held(message, write=write) -> None:
            await gate.wait()
            await write(message)

        socket.base_send = held
    return gate


async def test_a_room_behind_its_bound_refuses_new_messages_until_it_has_caught_up(open_socket, people, settings):
    settings.FANOUT_BACKLOG_LIMIT = 3  # frames: alice and bob are the room's two sockets here
    settings.CHAT_FLOOD_CLOSE_AFTER = 1  # a refusal that counted as flooding would close alice's socket
    alice, bob = people
    alice_socket, *_ = await join(open_socket, alice)
    bob_socket, *_ = await join(open_socket, bob)
    await next_of(alice_socket, "room.presence")  # bob came in
    drain = hold_writes("bob")

    first = await say(alice_socket, "one", "c-1")
    second = await say(alice_socket, "two", "c-2")  # 2 frames behind: still under the bound
    for _ in range(2):
        await alice_socket.send_json_to({"type": "chat.message", "body": "three", "client_id": "c-3"})
        error = await next_of(alice_socket, "error")
        assert error["code"] == "rate_limited" and error["client_id"] == "c-3"
    assert await database_sync_to_async(Message.objects.count)() == 2
    assert await answers_ping(alice_socket)  # not closed as a flood

    drain.set()
    assert (await next_of(bob_socket, "chat.message"))["id"] == first["id"]
    assert (await next_of(bob_socket, "chat.message"))["id"] == second["id"]
    # The same client_id again: stored once, now that the room has caught up.
    third = await say(alice_socket, "three", "c-3")
    assert third["client_id"] == "c-3" and third["id"] > second["id"]
    assert (await next_of(bob_socket, "chat.message"))["id"] == third["id"]
    assert await database_sync_to_async(Message.objects.filter(client_id="c-3").count)() == 1


@pytest.mark.parametrize("layer", ["redis"], indirect=True)  # the only layer whose inboxes have a capacity to read
async def test_a_room_whose_inbox_on_another_process_is_filling_refuses_new_messages(
    open_socket, people, settings, layer, monkeypatch
):
    from channels.layers import get_channel_layer

    from chat.protocol import room_group
    from realtime import fanout as module

    layers = copy.deepcopy(settings.CHANNEL_LAYERS)
    layers["default"]["CONFIG"]["capacity"] = 10
    settings.CHANNEL_LAYERS = layers
    monkeypatch.setattr(module, "INBOX_CHECK_INTERVAL", 0.0)  # read the inboxes at every message
    alice, _ = people
    alice_socket, *_ = await join(open_socket, alice)
    first = await say(alice_socket, "one", "c-1")
    # Another process holds a socket in the room, and has not received its last 5 messages (half its capacity):
    # past 10, channels-redis's group_send would drop what the room sends it.
    channel_layer = get_channel_layer()
    other = "specific.elsewhere!inbox"
    await channel_layer.group_add(room_group("lobby"), other)
    for n in range(5):
        await channel_layer.send(other, {"type": "frame.forward", "text": f"{n}"})
    await alice_socket.send_json_to({"type": "chat.message", "body": "two", "client_id": "c-2"})
    error = await next_of(alice_socket, "error")
    assert error["code"] == "rate_limited" and error["client_id"] == "c-2"
    assert await database_sync_to_async(Message.objects.count)() == 1
    assert await answers_ping(alice_socket)  # not closed as a flood

    # That process catches up: the same client_id again is stored once.
    redis = channel_layer.connection(channel_layer.consistent_hash("specific.elsewhere!"))
    await redis.zpopmin(channel_layer.prefix + "specific.elsewhere!", 5)
    second = await say(alice_socket, "two", "c-2")
    assert second["client_id"] == "c-2" and second["id"] > first["id"]
    assert await database_sync_to_async(Message.objects.filter(client_id="c-2").count)() == 1

    # A process that died leaves its inbox in the room until the group expiry, filling: once its oldest message
    # has waited INBOX_GONE_AFTER, nobody receives there any more, and it refuses nothing.
    for n in range(5):
        await channel_layer.send(other, {"type": "frame.forward", "text": f"{n}"})
    await alice_socket.send_json_to({"type": "chat.message", "body": "three", "client_id": "c-3"})
    assert (await next_of(alice_socket, "error"))["code"] == "rate_limited"
    monkeypatch.setattr(module, "INBOX_GONE_AFTER", 0.0)
    third = await say(alice_socket, "three", "c-3")
    assert third["client_id"] == "c-3" and third["id"] > second["id"]
