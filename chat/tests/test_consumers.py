"""/ws/chat/<room>/ through the full ASGI stack, on the in-memory layer and on a real Redis."""

import json
import logging
from unittest.mock import ANY

import pytest
from channels.db import database_sync_to_async
from django.contrib.sessions.models import Session
from django.db import connection

from accounts.services import user_sessions_end
from chat.models import Message
from presence_site.testing import answers_ping, close_code, forgotten

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("layer")]


# Frames about the room's people, the user's other rooms and their own status, which come whenever they change.
BACKGROUND = {"room.presence", "room.activity", "presence.status"}


async def next_of(communicator, frame_type: str, timeout: float = 5) -> dict:
    """The next frame of one type, skipping room.presence, room.activity and own status updates in between."""
    while True:
        frame = await communicator.receive_json_from(timeout=timeout)
        if frame["type"] == frame_type:
            return frame
        assert frame["type"] in BACKGROUND, frame


async def nothing_but_presence(communicator) -> bool:
    """True when only room.presence and room.activity frames (or nothing) arrive within a short wait."""
    while not await communicator.receive_nothing(timeout=0.3):
        frame = await communicator.receive_json_from(timeout=1)
        if frame["type"] not in BACKGROUND:
            return False
    return True


async def join(open_socket, user, slug: str = "lobby", query: str = ""):
    """Open a chat socket; return it with its history frame and first room.presence frame."""
    communicator, client, session_key = await open_socket(f"/ws/chat/{slug}/{query}", user)
    history = await communicator.receive_json_from(timeout=5)
    if history["type"] == "error":
        communicator.first_error = history
        history = await communicator.receive_json_from(timeout=5)
    assert history["type"] == "chat.history", history
    presence = await communicator.receive_json_from(timeout=5)
    assert presence["type"] == "room.presence", presence
    communicator.client = client
    communicator.session_key = session_key
    return communicator, history, presence


def stored(frame: dict) -> dict:
    """A message frame as a history lists it: live frames also carry the room's cursor."""
    return {key: value for key, value in frame.items() if key != "cursor"}


async def say(communicator, body: str, client_id: str | None = None) -> dict:
    frame = {"type": "chat.message", "body": body}
    if client_id is not None:
        frame["client_id"] = client_id
    await communicator.send_json_to(frame)
    return await next_of(communicator, "chat.message")


@pytest.fixture
async def people(make_user, make_room):
    def create():
        make_room("lobby")
        make_room("other")
        return make_user("alice"), make_user("bob"), make_user("mod", is_staff=True)

    return await database_sync_to_async(create)()


async def test_anonymous_gets_4401_whatever_the_room(open_socket, people):
    for path in ("/ws/chat/lobby/", "/ws/chat/NOPE/", "/ws/chat/missing/"):
        communicator, *_ = await open_socket(path)
        assert await close_code(communicator) == 4401


async def test_invalid_slug_and_missing_room_get_4404(open_socket, people):
    alice, *_ = people
    for slug in ("Lobby", "a_b", "x" * 51, "missing", "caf%C3%A9"):
        communicator, *_ = await open_socket(f"/ws/chat/{slug}/", alice)
        assert await close_code(communicator) == 4404, slug


async def test_connect_sends_last_50_then_room_presence(open_socket, people):
    alice, bob, _ = people

    def fill():
        room = Message._meta.get_field("room").related_model.objects.get(slug="lobby")
        Message.objects.bulk_create(Message(room=room, author=bob, body=f"m{i}", client_id=f"c{i}") for i in range(60))

    await database_sync_to_async(fill)()
    _, history, presence = await join(open_socket, alice)
    assert history["room"] == "lobby" and history["has_more"] is True
    assert [m["body"] for m in history["messages"]] == [f"m{i}" for i in range(10, 60)]
    ids = [m["id"] for m in history["messages"]]
    assert ids == sorted(ids)
    first = history["messages"][0]
    assert first["username"] == "bob" and first["room"] == "lobby" and first["sent_at"].endswith("Z")
    assert presence == {"type": "room.presence", "room": "lobby", "users": ["alice"], "statuses": {}}


async def test_room_presence_follows_joins_and_leaves_each_user_once(open_socket, people):
    alice, bob, _ = people
    alice_socket, *_ = await join(open_socket, alice)
    bob_socket, _, presence = await join(open_socket, bob)
    assert presence["users"] == ["alice", "bob"]
    assert (await next_of(alice_socket, "room.presence"))["users"] == ["alice", "bob"]
    second_tab, _, presence = await join(open_socket, bob)
    assert presence["users"] == ["alice", "bob"]
    await bob_socket.disconnect()
    await second_tab.disconnect()
    frames = [await alice_socket.receive_json_from(timeout=5) for _ in range(3)]
    assert frames[-1] == {"type": "room.presence", "room": "lobby", "users": ["alice"], "statuses": {}}


async def test_message_is_stored_then_reaches_everyone_in_the_room_only(open_socket, people):
    alice, bob, _ = people
    alice_socket, *_ = await join(open_socket, alice)
    bob_socket, *_ = await join(open_socket, bob)
    elsewhere, *_ = await join(open_socket, bob, "other")
    sent = await say(alice_socket, "  hello, bob \n", "c-1")
    assert sent["body"] == "hello, bob" and sent["username"] == "alice" and sent["client_id"] == "c-1"
    assert await next_of(bob_socket, "chat.message") == sent
    assert await nothing_but_presence(elsewhere)
    row = await database_sync_to_async(Message.objects.get)(id=sent["id"])
    assert row.body == "hello, bob" and row.client_id == "c-1"


@pytest.fixture
def failing_inserts():
    """A real database trigger that makes every insert into chat_message fail."""

    def install():
        with connection.cursor() as cursor:
            if connection.vendor == "sqlite":
                cursor.execute(
                    "CREATE TRIGGER chat_fail BEFORE INSERT ON chat_message "
                    "BEGIN SELECT RAISE(ABORT, 'forced failure'); END"
                )
            else:
                cursor.execute(
                    "CREATE FUNCTION chat_fail() RETURNS trigger AS $$ "
                    "BEGIN RAISE EXCEPTION 'forced failure'; END $$ LANGUAGE plpgsql"
                )
                cursor.execute(
                    "CREATE TRIGGER chat_fail BEFORE INSERT ON chat_message FOR EACH ROW EXECUTE FUNCTION chat_fail()"
                )

    def remove():
        with connection.cursor() as cursor:
            cursor.execute(
                "DROP TRIGGER IF EXISTS chat_fail" + ("" if connection.vendor == "sqlite" else " ON chat_message")
            )
            if connection.vendor != "sqlite":
                cursor.execute("DROP FUNCTION IF EXISTS chat_fail()")

    installed = []

    async def fail():
        await database_sync_to_async(install)()
        installed.append(True)

    yield fail
    if installed:
        remove()


async def test_database_error_means_no_broadcast_and_an_error_frame(open_socket, people, failing_inserts):
    alice, bob, _ = people
    alice_socket, *_ = await join(open_socket, alice)
    bob_socket, *_ = await join(open_socket, bob)
    await next_of(alice_socket, "room.presence")
    await failing_inserts()
    await alice_socket.send_json_to({"type": "chat.message", "body": "lost", "client_id": "c-1"})
    error = await next_of(alice_socket, "error")
    assert error["code"] == "unavailable"
    assert await nothing_but_presence(bob_socket)
    assert await database_sync_to_async(Message.objects.count)() == 0
    assert await answers_ping(alice_socket)


async def test_same_client_id_across_a_reconnect_is_stored_and_broadcast_once(open_socket, people):
    alice, bob, _ = people
    bob_socket, *_ = await join(open_socket, bob)
    alice_socket, *_ = await join(open_socket, alice)
    first = await say(alice_socket, "only once", "retry-1")
    assert await next_of(bob_socket, "chat.message") == first
    await alice_socket.disconnect()
    again, history, _ = await join(open_socket, alice, query=f"?after={first['id']}")
    assert history["messages"] == []
    second = await say(again, "only once", "retry-1")
    assert stored(second) == stored(first)
    assert await nothing_but_presence(bob_socket)
    assert await database_sync_to_async(Message.objects.filter(client_id="retry-1").count)() == 1


async def test_resume_after_returns_exactly_the_missed_messages_in_order(open_socket, people):
    alice, bob, _ = people
    alice_socket, *_ = await join(open_socket, alice)
    bob_socket, *_ = await join(open_socket, bob)
    seen = await say(alice_socket, "before the drop")
    await next_of(bob_socket, "chat.message")
    await bob_socket.disconnect()
    missed = [await say(alice_socket, f"missed {i}") for i in range(3)]
    bob_again, history, _ = await join(open_socket, bob, query=f"?after={seen['id']}")
    assert history["messages"] == [stored(frame) for frame in missed] and history["has_more"] is False
    later = await say(alice_socket, "after the return")
    assert await next_of(bob_again, "chat.message") == later


async def test_resume_returns_at_most_500_and_says_more_follow(open_socket, people):
    alice, bob, _ = people

    def fill():
        room = Message._meta.get_field("room").related_model.objects.get(slug="lobby")
        Message.objects.bulk_create(Message(room=room, author=bob, body=f"m{i}", client_id=f"c{i}") for i in range(502))
        return Message.objects.order_by("id").values_list("id", flat=True)[0]

    first_id = await database_sync_to_async(fill)()
    _, history, _ = await join(open_socket, alice, query=f"?after={first_id}")
    assert len(history["messages"]) == 500 and history["has_more"] is True
    assert [m["body"] for m in history["messages"]] == [f"m{i}" for i in range(1, 501)]


@pytest.mark.parametrize("after", ["abc", "-1", "1.5", "", "9" * 30, "１２"])
async def test_malformed_after_gets_invalid_then_the_last_50(open_socket, people, after):
    alice, *_ = people
    communicator, history, _ = await join(open_socket, alice, query=f"?after={after}")
    assert communicator.first_error["code"] == "invalid"
    assert history["messages"] == [] and history["has_more"] is False
    assert await answers_ping(communicator)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('{"type": "chat.message", "body": ""}', "invalid"),
        ('{"type": "chat.message", "body": " \\n\\t\\u3000 "}', "invalid"),
        (json.dumps({"type": "chat.message", "body": "x" * 2001}), "invalid"),
        (json.dumps({"type": "chat.message", "body": "a\x00b"}), "invalid"),
        ('{"type": "chat.message", "body": "lone \\ud800 surrogate"}', "invalid"),
        ('{"type": "chat.message", "body": "lone \\udc00 low"}', "invalid"),
        ('{"type": "chat.message", "body": 42}', "invalid"),
        ('{"type": "chat.message", "body": ["hi"]}', "invalid"),
        ('{"type": "chat.message"}', "invalid"),
        ('{"type": "chat.message", "body": "hi", "client_id": 7}', "invalid"),
        ('{"type": "chat.message", "body": "hi", "client_id": ""}', "invalid"),
        ('{"type": "chat.message", "body": "hi", "client_id": "' + "x" * 65 + '"}', "invalid"),
        ('{"type": "chat.deleted", "id": 1}', "unknown_type"),
        ('{"type": "frame.forward", "text": "x"}', "unknown_type"),
        ('{"type": "presence.state"}', "invalid"),  # taken here too, but it needs a state
        ('{"type": 5}', "invalid"),
        ('{"body": "hi"}', "invalid"),
        ("[1, 2]", "invalid"),
        ("not json", "bad_json"),
        ('{"type": "chat.message", "body": "hi"', "bad_json"),
    ],
)
async def test_bad_frames_get_an_error_and_the_socket_stays_open(open_socket, people, text, code):
    alice, *_ = people
    communicator, *_ = await join(open_socket, alice)
    await communicator.send_to(text_data=text)
    error = await communicator.receive_json_from(timeout=5)
    assert error["type"] == "error" and error["code"] == code and error["detail"]
    assert await answers_ping(communicator)
    assert await database_sync_to_async(Message.objects.count)() == 0


@pytest.mark.parametrize(
    ("client_id", "echoed"),
    [("kept-7", "kept-7"), ("x" * 65, None), (7, None)],
)
async def test_a_refused_message_error_names_its_well_formed_client_id(open_socket, people, client_id, echoed):
    alice, *_ = people
    communicator, *_ = await join(open_socket, alice)
    await communicator.send_json_to({"type": "chat.message", "body": "  ", "client_id": client_id})
    error = await next_of(communicator, "error")
    assert error["code"] == "invalid"
    assert error.get("client_id") == echoed


async def test_body_of_2000_code_points_is_stored_byte_exact(open_socket, people):
    alice, *_ = people
    communicator, *_ = await join(open_socket, alice)
    body = "é" + "👋🏽" * 999 + "\u0301"  # 2,000 code points, astral and combining included
    assert len(body) == 2000
    sent = await say(communicator, f"\n {body} \t")
    assert sent["body"] == body
    assert (await database_sync_to_async(Message.objects.get)(id=sent["id"])).body == body


async def test_html_is_stored_and_relayed_verbatim(open_socket, people):
    alice, bob, _ = people
    alice_socket, *_ = await join(open_socket, alice)
    bob_socket, *_ = await join(open_socket, bob)
    payload = '<script>alert("x")</script><img src=x onerror=alert(1)> &amp; &lt;b&gt;'
    sent = await say(alice_socket, payload)
    assert sent["body"] == payload
    assert (await next_of(bob_socket, "chat.message"))["body"] == payload
    assert (await database_sync_to_async(Message.objects.get)(id=sent["id"])).body == payload


async def test_rate_limit_engages_after_the_burst_across_sockets_and_rooms(open_socket, people, settings):
    settings.CHAT_RATE_PER_MINUTE = 6  # one every 10 s: nothing refills while the test runs
    alice, *_ = people
    first_tab, *_ = await join(open_socket, alice)
    second_tab, *_ = await join(open_socket, alice, "other")
    for i in range(5):
        await say(first_tab, f"first {i}")
        await say(second_tab, f"second {i}")
    await first_tab.send_json_to({"type": "chat.message", "body": "one too many", "client_id": "c-11"})
    error = await next_of(first_tab, "error")
    assert error["code"] == "rate_limited"
    assert error["client_id"] == "c-11"  # names the refused message, for a client with several in flight
    await second_tab.send_json_to({"type": "chat.message", "body": "also too many"})
    error = await next_of(second_tab, "error")
    assert error["code"] == "rate_limited" and "client_id" not in error
    assert await database_sync_to_async(Message.objects.count)() == 10
    assert await answers_ping(first_tab)


async def test_flooding_past_rate_limited_is_closed_with_1008_through_the_common_close(
    open_socket, people, settings, caplog
):
    settings.CHAT_RATE_BURST = 1
    settings.CHAT_RATE_PER_MINUTE = 1
    settings.CHAT_FLOOD_CLOSE_AFTER = 3
    alice, *_ = people
    communicator, *_ = await join(open_socket, alice)
    await say(communicator, "allowed")
    with caplog.at_level(logging.INFO, logger="realtime.sockets"):
        for i in range(4):
            await communicator.send_json_to({"type": "chat.message", "body": f"flood {i}"})
        assert await close_code(communicator) == 1008
    # Logged like every other server close, and forgotten at once, not when the client answers the close.
    assert any(
        "closing chat socket: code=1008" in record.getMessage() and "user=alice" in record.getMessage()
        for record in caplog.records
    )
    assert await forgotten(alice)


@pytest.mark.parametrize(
    "body",
    [
        "invoice\u202efdp.exe",  # shows as "invoiceexe.pdf"
        "isolate \u2066evil\u2069",
        "\u001b[31mred",  # a terminal escape
        "ring \u0007",
        "next line \u0085",
        "\u200b",  # nothing visible
        "\u200b\u200d \u0301",
        "nul \u0000",
    ],
)
async def test_text_the_validator_refuses_is_never_stored_or_broadcast(open_socket, people, body):
    alice, bob, _ = people
    alice_socket, *_ = await join(open_socket, alice)
    bob_socket, *_ = await join(open_socket, bob)
    await alice_socket.send_json_to({"type": "chat.message", "body": body, "client_id": "c-1"})
    error = await next_of(alice_socket, "error")
    assert error["code"] == "invalid" and error["client_id"] == "c-1" and "body" in error["detail"]
    assert await nothing_but_presence(bob_socket)
    assert await database_sync_to_async(Message.objects.count)() == 0
    assert await answers_ping(alice_socket)


@pytest.mark.parametrize("body", ["שלום עולם", "مرحبا", "👩‍👩‍👧‍👦 family", "a\u200bb", "نمی\u200cخواهم"])
async def test_right_to_left_text_emoji_and_joiners_are_kept_byte_for_byte(open_socket, people, body):
    alice, *_ = people
    communicator, *_ = await join(open_socket, alice)
    sent = await say(communicator, body)
    assert sent["body"].encode("utf-8") == body.encode("utf-8")
    stored = await database_sync_to_async(Message.objects.get)(id=sent["id"])
    assert stored.body.encode("utf-8") == body.encode("utf-8")


async def test_typing_reaches_the_others_not_the_sender_and_is_throttled(open_socket, people):
    alice, bob, _ = people
    alice_socket, *_ = await join(open_socket, alice)
    bob_socket, *_ = await join(open_socket, bob)
    elsewhere, *_ = await join(open_socket, bob, "other")
    await alice_socket.send_json_to({"type": "chat.typing"})
    await alice_socket.send_json_to({"type": "chat.typing"})
    assert await next_of(bob_socket, "chat.typing") == {"type": "chat.typing", "username": "alice"}
    assert await answers_ping(alice_socket)  # both typing frames handled by now
    assert await nothing_but_presence(bob_socket)  # the second was throttled
    assert await nothing_but_presence(alice_socket)
    assert await nothing_but_presence(elsewhere)


async def test_moderator_delete_reaches_every_client(open_socket, people):
    alice, bob, mod = people
    alice_socket, *_ = await join(open_socket, alice)
    bob_socket, *_ = await join(open_socket, bob)
    mod_socket, *_ = await join(open_socket, mod)
    sent = await say(alice_socket, "rude words")
    await next_of(bob_socket, "chat.message")
    await next_of(mod_socket, "chat.message")
    response = await database_sync_to_async(mod_socket.client.post)(f"/chat/lobby/messages/{sent['id']}/delete")
    assert response.status_code == 200
    for communicator in (alice_socket, bob_socket, mod_socket):
        assert await next_of(communicator, "chat.deleted") == {
            "type": "chat.deleted",
            "id": sent["id"],
            "room": "lobby",
            "cursor": ANY,
        }
    assert not await database_sync_to_async(Message.objects.filter(id=sent["id"]).exists)()


async def test_a_client_away_during_a_delete_removes_it_when_it_resumes(open_socket, people, settings):
    alice, bob, mod = people
    alice_socket, *_ = await join(open_socket, alice)
    bob_socket, *_ = await join(open_socket, bob)
    rude, kept, also_rude = [await say(alice_socket, body) for body in ("rude words", "kind words", "more rude")]
    for _ in range(3):
        await next_of(bob_socket, "chat.message")
    await bob_socket.disconnect()
    # While bob's laptop sleeps: two of the messages he shows are deleted, and one he never saw is sent and deleted.
    unseen = await say(alice_socket, "sent and deleted while bob was away")
    mod_client = (await join(open_socket, mod))[0].client
    for message in (also_rude, unseen, rude):
        response = await database_sync_to_async(mod_client.post)(f"/chat/lobby/messages/{message['id']}/delete")
        assert response.status_code == 200
    # He resumes from the first: the messages he got live, above it, count too.
    bob_again, history, _ = await join(open_socket, bob, query=f"?after={rude['id']}")
    assert history["deleted"] == [rude["id"], also_rude["id"], unseen["id"]]
    assert [m["id"] for m in history["messages"]] == [kept["id"]]
    # A page load needs no list: its history leaves deleted messages out.
    _, fresh, _ = await join(open_socket, bob)
    assert "deleted" not in fresh and [m["id"] for m in fresh["messages"]] == [kept["id"]]
    # Past CHAT_DELETED_KEEP the trace is gone: a client away that long shows the message until a page load.
    settings.CHAT_DELETED_KEEP = 0
    _, late, _ = await join(open_socket, bob, query=f"?after={rude['id']}")
    assert late["deleted"] == []


async def test_author_may_delete_but_another_user_may_not(open_socket, people):
    alice, bob, _ = people
    alice_socket, *_ = await join(open_socket, alice)
    bob_socket, *_ = await join(open_socket, bob)
    sent = await say(alice_socket, "mine")
    await next_of(bob_socket, "chat.message")
    response = await database_sync_to_async(bob_socket.client.post)(f"/chat/lobby/messages/{sent['id']}/delete")
    assert response.status_code == 403
    assert await nothing_but_presence(alice_socket)
    assert await database_sync_to_async(Message.objects.filter(id=sent["id"]).exists)()
    response = await database_sync_to_async(alice_socket.client.post)(f"/chat/lobby/messages/{sent['id']}/delete")
    assert response.status_code == 200
    assert await next_of(bob_socket, "chat.deleted") == {
        "type": "chat.deleted",
        "id": sent["id"],
        "room": "lobby",
        "cursor": ANY,
    }


async def test_ending_a_users_sessions_closes_all_their_sockets_with_4000(open_socket, people):
    alice, bob, _ = people
    chat_tab, *_ = await join(open_socket, alice)
    other_tab, *_ = await join(open_socket, alice, "other")
    bob_socket, *_ = await join(open_socket, bob)
    sessions, sockets = await database_sync_to_async(user_sessions_end)(user_id=alice.pk)
    assert sessions == 2 and sockets == 2
    assert await close_code(chat_tab) == 4000
    assert await close_code(other_tab) == 4000
    assert not await database_sync_to_async(Session.objects.filter(session_key=chat_tab.session_key).exists)()
    assert await answers_ping(bob_socket)
    again, *_ = await open_socket("/ws/chat/lobby/", session_key=chat_tab.session_key)
    assert await close_code(again) == 4401


async def test_admin_delete_and_end_sessions_action_reach_the_sockets(open_socket, people, make_user):
    alice, bob, _ = people
    root = await database_sync_to_async(make_user)("root", is_staff=True, is_superuser=True)
    alice_socket, *_ = await join(open_socket, alice)
    bob_socket, *_ = await join(open_socket, bob)
    root_socket, *_ = await join(open_socket, root, "other")
    admin = root_socket.client
    sent = await say(alice_socket, "spam")
    await next_of(bob_socket, "chat.message")

    response = await database_sync_to_async(admin.post)(
        "/admin/chat/message/", {"action": "delete_selected", "_selected_action": [sent["id"]], "post": "yes"}
    )
    assert response.status_code == 302
    for communicator in (alice_socket, bob_socket):
        assert await next_of(communicator, "chat.deleted") == {
            "type": "chat.deleted",
            "id": sent["id"],
            "room": "lobby",
            "cursor": ANY,
        }

    spam = await say(alice_socket, "more spam")
    await next_of(bob_socket, "chat.message")
    response = await database_sync_to_async(admin.post)(
        "/admin/chat/message/", {"action": "end_author_sessions", "_selected_action": [spam["id"]]}
    )
    assert response.status_code == 302
    assert await close_code(alice_socket) == 4000
    assert await answers_ping(bob_socket)


async def test_coalesced_room_presence_ends_with_everyone_who_joined(open_socket, people, settings):
    settings.CHAT_PRESENCE_WINDOW = 0.2
    alice, bob, mod = people
    alice_socket, _, presence = await join(open_socket, alice)
    assert presence["users"] == ["alice"]
    for user in (bob, mod):
        await open_socket("/ws/chat/lobby/", user)
    # However the joins were grouped, the last list is read after the last of them.
    users = []
    while users != ["alice", "bob", "mod"]:
        users = (await next_of(alice_socket, "room.presence"))["users"]


async def test_room_lists_show_statuses_and_leave_out_the_invisible_who_can_still_chat(open_socket, people):
    alice, bob, _ = people
    alice_socket, *_ = await join(open_socket, alice)
    bob_socket, *_ = await join(open_socket, bob)
    while (await next_of(alice_socket, "room.presence"))["users"] != ["alice", "bob"]:
        pass
    await bob_socket.send_json_to({"type": "status.set", "text": "Lunch", "emoji": "🥪"})
    frame = await next_of(alice_socket, "room.presence")
    assert frame["users"] == ["alice", "bob"]
    assert frame["statuses"]["bob"]["text"] == "Lunch" and "alice" not in frame["statuses"]

    await bob_socket.send_json_to({"type": "status.set", "invisible": True})
    while (frame := await next_of(alice_socket, "room.presence"))["users"] != ["alice"]:
        pass
    assert "bob" not in frame["statuses"]
    sent = await say(bob_socket, "still here, quietly")
    assert (await next_of(alice_socket, "chat.message"))["username"] == "bob" == sent["username"]


# ---------- edit, reactions, resume by cursor ----------


async def test_an_edit_reaches_the_room_with_its_html_and_keeps_the_earlier_version(open_socket, people):
    alice, bob, _ = people
    alice_socket, *_ = await join(open_socket, alice)
    bob_socket, *_ = await join(open_socket, bob)
    sent = await say(alice_socket, "teh **typo**")
    await next_of(bob_socket, "chat.message")
    await alice_socket.send_json_to({"type": "chat.edit", "id": sent["id"], "body": "the **typo**"})
    for communicator in (alice_socket, bob_socket):
        edited = await next_of(communicator, "chat.edited")
        assert edited["id"] == sent["id"] and edited["room"] == "lobby"
        assert edited["body"] == "the **typo**" and edited["html"] == "<p>the <strong>typo</strong></p>"
        assert edited["edited_at"] and edited["cursor"] != sent["cursor"]
    versions = await database_sync_to_async(
        lambda: list(Message.objects.get(id=sent["id"]).edits.values_list("body", flat=True))
    )()
    assert versions == ["teh **typo**"]
    await alice_socket.disconnect()
    await bob_socket.disconnect()


async def test_edits_of_anothers_message_or_past_the_window_are_forbidden_and_change_nothing(
    open_socket, people, settings
):
    alice, bob, _ = people
    alice_socket, *_ = await join(open_socket, alice)
    bob_socket, *_ = await join(open_socket, bob)
    sent = await say(alice_socket, "mine")
    await next_of(bob_socket, "chat.message")
    await bob_socket.send_json_to({"type": "chat.edit", "id": sent["id"], "body": "yours now"})
    error = await next_of(bob_socket, "error")
    assert error["code"] == "forbidden"
    settings.CHAT_EDIT_WINDOW = 0
    await alice_socket.send_json_to({"type": "chat.edit", "id": sent["id"], "body": "too late"})
    assert (await next_of(alice_socket, "error"))["code"] == "forbidden"
    assert await database_sync_to_async(lambda: Message.objects.get(id=sent["id"]).body)() == "mine"
    assert await nothing_but_presence(bob_socket)
    assert await answers_ping(alice_socket) and await answers_ping(bob_socket)
    await alice_socket.disconnect()
    await bob_socket.disconnect()


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "chat.edit", "id": 999_999, "body": "x"},
        {"type": "chat.edit", "id": "1", "body": "x"},
        {"type": "chat.edit", "id": True, "body": "x"},
        {"type": "chat.edit", "id": "SENT", "body": "   "},
        {"type": "chat.edit", "id": "SENT", "body": "x" * 2001},
        {"type": "chat.edit", "id": "SENT"},
        {"type": "chat.react", "id": "SENT", "emoji": "ab"},
        {"type": "chat.react", "id": "SENT", "emoji": "👍👍"},
        {"type": "chat.react", "id": "SENT", "emoji": ""},
        {"type": "chat.react", "id": "SENT", "emoji": None},
        {"type": "chat.react", "id": 999_999, "emoji": "👍"},
    ],
)
async def test_bad_edit_and_react_frames_get_invalid_and_change_nothing(open_socket, people, frame):
    alice, *_ = people
    alice_socket, *_ = await join(open_socket, alice)
    sent = await say(alice_socket, "keep me")
    frame = {key: sent["id"] if value == "SENT" else value for key, value in frame.items()}
    await alice_socket.send_json_to(frame)
    error = await next_of(alice_socket, "error")
    assert error["code"] == "invalid", error
    message = await database_sync_to_async(Message.objects.get)(id=sent["id"])
    assert message.body == "keep me" and message.edited_at is None
    assert not await database_sync_to_async(message.reactions.exists)()
    assert await answers_ping(alice_socket)
    await alice_socket.disconnect()


async def test_a_deleted_message_can_be_neither_edited_nor_reacted_to(open_socket, people):
    alice, *_ = people
    alice_socket, *_ = await join(open_socket, alice)
    sent = await say(alice_socket, "soon gone")
    await database_sync_to_async(alice_socket.client.post)(f"/chat/lobby/messages/{sent['id']}/delete")
    await next_of(alice_socket, "chat.deleted")
    await alice_socket.send_json_to({"type": "chat.edit", "id": sent["id"], "body": "back?"})
    assert (await next_of(alice_socket, "error"))["code"] == "invalid"
    await alice_socket.send_json_to({"type": "chat.react", "id": sent["id"], "emoji": "👍"})
    assert (await next_of(alice_socket, "error"))["code"] == "invalid"
    await alice_socket.disconnect()


async def test_a_reaction_toggles_and_every_socket_gets_the_whole_list(open_socket, people):
    alice, bob, _ = people
    alice_socket, *_ = await join(open_socket, alice)
    bob_socket, *_ = await join(open_socket, bob)
    sent = await say(alice_socket, "react to me")
    await next_of(bob_socket, "chat.message")
    family = "👨\u200d👩\u200d👧"
    await bob_socket.send_json_to({"type": "chat.react", "id": sent["id"], "emoji": "👍"})
    await next_of(bob_socket, "chat.reactions")
    await alice_socket.send_json_to({"type": "chat.react", "id": sent["id"], "emoji": "👍"})
    frame = await next_of(alice_socket, "chat.reactions")
    frame = await next_of(alice_socket, "chat.reactions") if len(frame["reactions"][0]["users"]) == 1 else frame
    assert frame["reactions"] == [{"emoji": "👍", "users": ["alice", "bob"]}] and frame["cursor"]
    await bob_socket.send_json_to({"type": "chat.react", "id": sent["id"], "emoji": family})
    await bob_socket.send_json_to({"type": "chat.react", "id": sent["id"], "emoji": "👍"})
    frames = [await next_of(alice_socket, "chat.reactions") for _ in range(2)]
    # (alice's own second frame may still be in flight on bob's socket: read what is there)
    assert frames[-1]["reactions"] == [{"emoji": "👍", "users": ["alice"]}, {"emoji": family, "users": ["bob"]}]
    await alice_socket.disconnect()
    await bob_socket.disconnect()


async def test_a_page_back_with_its_cursor_gets_what_it_missed(open_socket, people):
    alice, bob, mod = people
    alice_socket, *_ = await join(open_socket, alice)
    bob_socket, bob_history, _ = await join(open_socket, bob)
    older = await say(bob_socket, "older")
    doomed = await say(bob_socket, "doomed")
    await next_of(alice_socket, "chat.message")
    await next_of(alice_socket, "chat.message")
    await alice_socket.disconnect()
    away, history, _ = await join(open_socket, alice)
    cursor = history["cursor"]
    await away.disconnect()
    # While alice is away: bob edits and reacts to an older message, one is deleted, one is new.
    await bob_socket.send_json_to({"type": "chat.edit", "id": older["id"], "body": "older, _fixed_"})
    await next_of(bob_socket, "chat.edited")
    await bob_socket.send_json_to({"type": "chat.react", "id": older["id"], "emoji": "🎉"})
    await next_of(bob_socket, "chat.reactions")
    await database_sync_to_async(bob_socket.client.post)(f"/chat/lobby/messages/{doomed['id']}/delete")
    await next_of(bob_socket, "chat.deleted")
    new = await say(bob_socket, "new")
    back, resumed, _ = await join(open_socket, alice, query=f"?cursor={cursor}")
    assert [m["id"] for m in resumed["messages"]] == [new["id"]] and "reset" not in resumed
    kinds = {(change["type"], change["id"]) for change in resumed["changes"]}
    assert kinds == {("chat.deleted", doomed["id"]), ("chat.edited", older["id"]), ("chat.reactions", older["id"])}
    edited = next(change for change in resumed["changes"] if change["type"] == "chat.edited")
    assert edited["html"] == "<p>older, <em>fixed</em></p>"
    reactions = next(change for change in resumed["changes"] if change["type"] == "chat.reactions")
    assert reactions["reactions"] == [{"emoji": "🎉", "users": ["bob"]}]
    assert resumed["cursor"] == new["cursor"]
    await back.disconnect()
    # Back again at once: nothing is missed twice.
    again, quiet, _ = await join(open_socket, alice, query=f"?cursor={resumed['cursor']}")
    assert quiet["messages"] == [] and quiet["changes"] == []
    await again.disconnect()
    await bob_socket.disconnect()


@pytest.mark.parametrize("cursor", ["nonsense", "999999.1", "1.99999999", ""])
async def test_an_unknown_cursor_gets_the_last_messages_and_a_reset(open_socket, people, cursor):
    alice, *_ = people
    alice_socket, *_ = await join(open_socket, alice)
    sent = await say(alice_socket, "latest")
    await alice_socket.disconnect()
    back, history, _ = await join(open_socket, alice, query=f"?cursor={cursor}")
    assert history["reset"] is True and history["messages"][-1]["id"] == sent["id"] and history["cursor"]
    await back.disconnect()


async def test_an_expired_cursor_gets_a_reset(open_socket, people, settings):
    alice, *_ = people
    alice_socket, history, _ = await join(open_socket, alice)
    await say(alice_socket, "first")
    await alice_socket.disconnect()
    settings.CHAT_DELETED_KEEP = 0
    # A deletion prunes what is older than CHAT_DELETED_KEEP: the change after the cursor is gone.
    other = await database_sync_to_async(lambda: Message.objects.first())()
    await database_sync_to_async(alice_socket.client.post)(f"/chat/lobby/messages/{other.id}/delete")
    back, resumed, _ = await join(open_socket, alice, query=f"?cursor={history['cursor']}")
    assert resumed["reset"] is True
    await back.disconnect()
