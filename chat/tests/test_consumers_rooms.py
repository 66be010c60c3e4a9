"""Membership, read markers, room.activity and direct rooms through /ws/chat/ and /ws/presence/, on both layers."""

import asyncio

import pytest
from channels.db import database_sync_to_async

from chat.models import Membership, Message, Room
from chat.services import message_post, room_direct_open, room_enter
from presence_site.testing import answers_ping, close_code

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("layer")]


async def frame_of(communicator, frame_type: str, timeout: float = 5) -> dict:
    """The next frame of one type, skipping any others."""
    while True:
        frame = await communicator.receive_json_from(timeout=timeout)
        if frame["type"] == frame_type:
            return frame


async def none_of(communicator, frame_type: str) -> bool:
    """True when no frame of this type arrives within a short wait (frames of other types are skipped)."""
    while not await communicator.receive_nothing(timeout=0.4):
        if (await communicator.receive_json_from(timeout=1))["type"] == frame_type:
            return False
    return True


async def in_room(open_socket, user, slug: str = "lobby", query: str = ""):
    """A chat socket past its history; returns it with the history frame."""
    communicator, *_ = await open_socket(f"/ws/chat/{slug}/{query}", user)
    history = await frame_of(communicator, "chat.history")
    return communicator, history


async def watching(open_socket, user):
    """A presence socket past its snapshot: the socket of any page but a room's."""
    communicator, *_ = await open_socket("/ws/presence/", user)
    await frame_of(communicator, "presence.snapshot")
    return communicator


async def say(communicator, body: str) -> dict:
    await communicator.send_json_to({"type": "chat.message", "body": body})
    return await frame_of(communicator, "chat.message")


@pytest.fixture
async def people(make_user, make_room):
    def create():
        make_room("lobby")
        make_room("other")
        return make_user("alice"), make_user("bob"), make_user("carol")

    return await database_sync_to_async(create)()


async def marker(user, slug: str = "lobby") -> int | None:
    return await database_sync_to_async(
        Membership.objects.filter(user=user, room__slug=slug).values_list("last_read_id", flat=True).first
    )()


async def test_sockets_opening_a_room_together_each_get_their_own_marker(open_socket, people):
    alice, bob, carol = people
    lobby = await database_sync_to_async(Room.objects.get)(slug="lobby")
    for user in (alice, bob, carol):
        await database_sync_to_async(room_enter)(slug="lobby", user=user)
    sent = [
        (await database_sync_to_async(message_post)(room=lobby, user=carol, body=f"m{n}", client_id=f"c{n}"))[0]
        for n in range(3)
    ]
    await database_sync_to_async(Membership.objects.filter(user=alice).update)(last_read_id=sent[0]["id"])
    await database_sync_to_async(Membership.objects.filter(user=bob).update)(last_read_id=sent[1]["id"])
    # Opened at one moment, they may share one read of the room (chat.consumers.RoomHistory): never one marker.
    opened = await asyncio.gather(*(in_room(open_socket, user) for user in (alice, bob, carol, alice)))
    histories = [history for _, history in opened]
    assert [history["last_read"] for history in histories] == [sent[0]["id"], sent[1]["id"], None, sent[0]["id"]]
    assert all([m["id"] for m in history["messages"]] == [m["id"] for m in sent] for history in histories)


async def test_opening_a_public_rooms_socket_makes_a_member_whose_past_is_read(open_socket, people):
    alice, bob, _ = people
    lobby = await database_sync_to_async(Room.objects.get)(slug="lobby")
    before = (await database_sync_to_async(message_post)(room=lobby, user=bob, body="old", client_id="c1"))[0]
    _, history = await in_room(open_socket, alice)
    assert history["last_read"] == before["id"]
    assert await marker(alice) == before["id"]


async def test_history_carries_the_marker_as_the_socket_opened(open_socket, people):
    alice, bob, _ = people
    alice_socket, history = await in_room(open_socket, alice)
    assert history["last_read"] is None  # an empty room: nothing read yet
    bob_socket, _ = await in_room(open_socket, bob)
    sent = [await say(bob_socket, f"m{n}") for n in range(3)]
    await alice_socket.send_json_to({"type": "chat.read", "up_to": sent[0]["id"]})
    await frame_of(alice_socket, "chat.read")
    _, again = await in_room(open_socket, alice)
    assert again["last_read"] == sent[0]["id"]
    # A resume carries it too.
    _, resumed = await in_room(open_socket, alice, query=f"?after={sent[0]['id']}")
    assert resumed["last_read"] == sent[0]["id"] and [m["id"] for m in resumed["messages"]] == [
        sent[1]["id"],
        sent[2]["id"],
    ]


async def test_reading_moves_the_marker_forward_and_every_socket_of_the_reader_hears_it(open_socket, people):
    alice, bob, _ = people
    reading, _ = await in_room(open_socket, alice)
    other_tab, _ = await in_room(open_socket, alice, "other")
    list_page = await watching(open_socket, alice)
    bob_socket, _ = await in_room(open_socket, bob)
    first = await say(bob_socket, "hi @alice")
    second = await say(bob_socket, "still there?")

    await reading.send_json_to({"type": "chat.read", "up_to": first["id"]})
    expected = {"type": "chat.read", "room": "lobby", "up_to": first["id"], "unread": 1, "mentions": 0}
    for communicator in (reading, other_tab, list_page):
        assert await frame_of(communicator, "chat.read") == expected
    assert await none_of(bob_socket, "chat.read")
    assert await marker(alice) == first["id"]

    await list_page.send_json_to({"type": "chat.read", "up_to": second["id"]})
    assert (await frame_of(list_page, "error"))["code"] == "unknown_type"  # a presence socket reads no room

    # The other tab is in another room: a lobby message is not of its room.
    await other_tab.send_json_to({"type": "chat.read", "up_to": second["id"]})
    assert (await frame_of(other_tab, "error"))["code"] == "invalid"
    await reading.send_json_to({"type": "chat.read", "up_to": second["id"]})
    assert (await frame_of(list_page, "chat.read"))["unread"] == 0
    # Never back, and nothing to tell when it does not move.
    await reading.send_json_to({"type": "chat.read", "up_to": first["id"]})
    await reading.send_json_to({"type": "chat.read", "up_to": second["id"]})
    assert await none_of(list_page, "chat.read")
    assert await answers_ping(reading)
    assert await marker(alice) == second["id"]


@pytest.mark.parametrize("up_to", ["5", -1, 0, 1.5, True, None, [1], 2**63, "other-room", "missing"])
async def test_a_bad_chat_read_is_invalid_and_moves_nothing(open_socket, people, up_to):
    alice, bob, _ = people

    def setup():
        lobby, other = Room.objects.get(slug="lobby"), Room.objects.get(slug="other")
        ids = {
            "own": message_post(room=lobby, user=bob, body="here", client_id="c1")[0]["id"],
            "other-room": message_post(room=other, user=bob, body="elsewhere", client_id="c2")[0]["id"],
        }
        ids["missing"] = ids["other-room"] + 100
        return ids

    ids = await database_sync_to_async(setup)()
    alice_socket, _ = await in_room(open_socket, alice)
    start = await marker(alice)
    value = ids[up_to] if up_to in ("other-room", "missing") else up_to
    frame = {"type": "chat.read"} if up_to is None else {"type": "chat.read", "up_to": value}
    await alice_socket.send_json_to(frame)
    error = await frame_of(alice_socket, "error")
    assert error["code"] == "invalid" and "up_to" in error["detail"]
    assert await answers_ping(alice_socket)
    assert await marker(alice) == start


async def test_room_activity_tells_members_elsewhere_their_exact_counts(open_socket, people):
    alice, bob, carol = people
    await database_sync_to_async(room_enter)(slug="lobby", user=alice)
    alice_page = await watching(open_socket, alice)
    alice_elsewhere, _ = await in_room(open_socket, alice, "other")
    carol_page = await watching(open_socket, carol)  # not a member
    bob_socket, _ = await in_room(open_socket, bob)
    await say(bob_socket, "one")
    await say(bob_socket, "two @alice")
    last = await say(bob_socket, "three")

    for communicator in (alice_page, alice_elsewhere):
        activity = await frame_of(communicator, "room.activity")
        while activity["last_message"]["id"] != last["id"]:  # coalesced, or one per message
            activity = await frame_of(communicator, "room.activity")
        assert activity == {
            "type": "room.activity",
            "room": "lobby",
            "title": "lobby",
            "kind": "public",
            "unread": 3,
            "mentions": 1,
            "last_read": None,
            "last_message": last,
        }
    assert await none_of(carol_page, "room.activity")
    # The sender's only socket is in the room: the messages are its news.
    assert await none_of(bob_socket, "room.activity")


async def test_a_burst_of_messages_costs_each_member_a_few_frames(open_socket, people, settings):
    settings.CHAT_ACTIVITY_WINDOW = 0.25
    alice, bob, _ = people
    await database_sync_to_async(room_enter)(slug="lobby", user=alice)
    alice_page = await watching(open_socket, alice)
    bob_socket, _ = await in_room(open_socket, bob)
    for n in range(8):
        await bob_socket.send_json_to({"type": "chat.message", "body": f"burst {n}"})
    frames = []
    while not frames or frames[-1]["unread"] < 8:
        frames.append(await frame_of(alice_page, "room.activity"))
    assert len(frames) <= 3
    assert frames[-1]["last_message"]["body"] == "burst 7"


async def test_a_direct_room_is_closed_4403_to_anyone_else_and_its_news_reach_only_its_members(open_socket, people):
    alice, bob, carol = people
    room = await database_sync_to_async(room_direct_open)(user=bob, other=alice)
    carol_page = await watching(open_socket, carol)
    alice_page = await watching(open_socket, alice)
    intruder, *_ = await open_socket(f"/ws/chat/{room.slug}/", carol)
    assert await close_code(intruder) == 4403
    missing, *_ = await open_socket("/ws/chat/dm-998-999/", carol)
    assert await close_code(missing) == 4404
    anonymous, *_ = await open_socket(f"/ws/chat/{room.slug}/")
    assert await close_code(anonymous) == 4401

    bob_socket, history = await in_room(open_socket, bob, room.slug)
    assert history["last_read"] is None
    sent = await say(bob_socket, "just between us, @carol")
    assert sent["mentions"] == []  # carol may not read it
    activity = await frame_of(alice_page, "room.activity")
    shown = (activity["room"], activity["kind"], activity["title"], activity["unread"])
    assert shown == (room.slug, "direct", "bob", 1)
    assert await none_of(carol_page, "room.activity")
    assert not await database_sync_to_async(Membership.objects.filter(user=carol).exists)()
    assert await database_sync_to_async(Message.objects.filter(room=room).count)() == 1
