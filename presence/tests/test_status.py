"""Status, do-not-disturb and invisibility over /ws/presence/, through the full ASGI stack, on both layers."""

from datetime import UTC, datetime, timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from presence.models import UserPresence

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("layer")]


async def frames_until(socket, wanted, timeout: float = 5) -> list[dict]:
    """Frames up to and including the first for which wanted(frame) holds."""
    frames = []
    while True:
        frame = await socket.receive_json_from(timeout=timeout)
        frames.append(frame)
        if wanted(frame):
            return frames


def status_of(name: str):
    return lambda f: f["type"] == "presence.status" and f["username"] == name


def diff_with(kind: str, name: str):
    return lambda f: f["type"] == "presence.diff" and any(e["username"] == name for e in f[kind])


async def settled(socket) -> list[dict]:
    """Everything the socket gets up to the answer to a ping."""
    await socket.send_json_to({"type": "ping"})
    return await frames_until(socket, lambda f: f["type"] == "pong")


@pytest.fixture
async def alice_and_bob(make_user, open_socket):
    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    watcher, *_ = await open_socket("/ws/presence/", alice)
    await frames_until(watcher, lambda f: f["type"] == "presence.snapshot")
    bob_socket, *_ = await open_socket("/ws/presence/", bob)
    await frames_until(bob_socket, lambda f: f["type"] == "presence.snapshot")
    await frames_until(watcher, diff_with("joins", "bob"))
    return watcher, bob_socket, bob


async def test_a_status_reaches_every_watcher_and_the_next_snapshot(alice_and_bob, open_socket, make_user):
    watcher, bob_socket, _ = alice_and_bob
    until = (timezone.now() + timedelta(minutes=30)).astimezone(UTC).isoformat().replace("+00:00", "Z")
    await bob_socket.send_json_to(
        {"type": "status.set", "text": "  In a meeting ", "emoji": "📅", "expires_at": until, "dnd": True, "x": 1}
    )
    frame = (await frames_until(watcher, status_of("bob")))[-1]
    assert frame["status"] == {
        "text": "In a meeting",
        "emoji": "📅",
        "expires_at": frame["status"]["expires_at"],
        "dnd": True,
    }
    assert abs(datetime.fromisoformat(frame["status"]["expires_at"]) - datetime.fromisoformat(until)) < timedelta(
        seconds=1
    )
    carol = await database_sync_to_async(make_user)("carol")
    late, *_ = await open_socket("/ws/presence/", carol)
    snapshot = (await frames_until(late, lambda f: f["type"] == "presence.snapshot"))[-1]
    bob = next(user for user in snapshot["users"] if user["username"] == "bob")
    assert bob["status"]["text"] == "In a meeting" and bob["status"]["dnd"] is True


async def test_a_status_clears_itself_at_its_time_and_says_so(alice_and_bob, settings):
    settings.PRESENCE_HEARTBEAT_INTERVAL = 0.2
    watcher, bob_socket, bob = alice_and_bob
    soon = (timezone.now() + timedelta(seconds=1)).isoformat()
    await bob_socket.send_json_to({"type": "status.set", "text": "Back in a second", "expires_at": soon})
    assert (await frames_until(watcher, status_of("bob")))[-1]["status"]["text"] == "Back in a second"
    cleared = (await frames_until(watcher, status_of("bob"), timeout=5))[-1]
    assert cleared["status"] is None
    presence = await database_sync_to_async(UserPresence.objects.get)(user=bob)
    assert presence.status_text == "" and presence.status_expires_at is None


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"text": 5}, "invalid"),
        ({"text": "x" * 81}, "invalid"),
        ({"text": "evil\u202etxt"}, "invalid"),
        ({"text": "\u200b"}, "invalid"),
        ({"emoji": "🎉🎉"}, "invalid"),
        ({"emoji": "a"}, "invalid"),
        ({"emoji": 1}, "invalid"),
        ({"expires_at": "2001-01-01T00:00:00Z"}, "invalid"),
        ({"expires_at": "tomorrow"}, "invalid"),
        ({"expires_at": "2099-01-01T00:00:00"}, "invalid"),
        ({"expires_at": 123}, "invalid"),
        ({"dnd": "yes"}, "invalid"),
        ({"invisible": 1}, "invalid"),
        ({"text": "fine", "emoji": "nope"}, "invalid"),
    ],
)
async def test_a_bad_status_is_invalid_and_changes_nothing(alice_and_bob, frame, code):
    watcher, bob_socket, bob = alice_and_bob
    await bob_socket.send_json_to({"type": "status.set", **frame})
    error = next(f for f in await settled(bob_socket) if f["type"] == "error")
    assert error["code"] == code and error["detail"]
    presence = await database_sync_to_async(UserPresence.objects.get)(user=bob)
    assert (presence.status_text, presence.status_emoji, presence.dnd, presence.invisible) == ("", "", False, False)
    assert not any(f["type"] == "presence.status" for f in await settled(watcher))


async def test_invisible_is_forbidden_where_the_server_does_not_allow_it(alice_and_bob, settings):
    settings.PRESENCE_ALLOW_INVISIBLE = False
    _, bob_socket, bob = alice_and_bob
    await bob_socket.send_json_to({"type": "status.set", "invisible": True, "text": "hidden"})
    error = next(f for f in await settled(bob_socket) if f["type"] == "error")
    assert error["code"] == "forbidden"
    presence = await database_sync_to_async(UserPresence.objects.get)(user=bob)
    assert presence.invisible is False and presence.status_text == ""


async def test_invisible_is_one_leave_for_others_and_online_to_oneself(alice_and_bob, open_socket, make_user):
    watcher, bob_socket, bob = alice_and_bob
    await bob_socket.send_json_to({"type": "status.set", "invisible": True})
    own = (await frames_until(bob_socket, status_of("bob")))[-1]
    assert own["invisible"] is True
    frames = await frames_until(watcher, diff_with("leaves", "bob"))
    assert not any(f["type"] == "presence.status" for f in frames), "others learn nothing but the leave"

    # A second tab, then closing it: others hear nothing; a newcomer's snapshot has bob offline.
    second, *_ = await open_socket("/ws/presence/", bob)
    snapshot = (await frames_until(second, lambda f: f["type"] == "presence.snapshot"))[-1]
    assert "bob" not in {u["username"] for u in snapshot["users"]}
    assert "bob" in {u["username"] for u in snapshot["recent"]}
    await second.disconnect()
    assert not any(f["type"] == "presence.diff" for f in await settled(watcher))

    await bob_socket.send_json_to({"type": "status.set", "invisible": False})
    frames = await frames_until(watcher, diff_with("joins", "bob"))
    joins = [e["username"] for f in frames if f["type"] == "presence.diff" for e in f["joins"]]
    assert joins == ["bob"]
    assert (await frames_until(bob_socket, status_of("bob")))[-1]["invisible"] is False


async def test_every_tab_of_the_user_learns_the_new_status(alice_and_bob, open_socket):
    _, bob_socket, bob = alice_and_bob
    other_tab, *_ = await open_socket("/ws/presence/", bob)
    await frames_until(other_tab, lambda f: f["type"] == "presence.snapshot")
    await bob_socket.send_json_to({"type": "status.set", "emoji": "🌴", "text": "Holiday"})
    own = (await frames_until(other_tab, lambda f: status_of("bob")(f) and "invisible" in f))[-1]
    assert own["status"]["emoji"] == "🌴" and own["invisible"] is False
