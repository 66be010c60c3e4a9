"""What every WebSocket endpoint withstands: floods, too many sockets, sessions that end under it.

Each test runs once per path in SOCKET_ENDPOINTS (the `endpoint` fixture), on
the in-memory layer and on a real Redis.
"""

import asyncio
import logging
from importlib import import_module

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.contrib.sessions.models import Session
from django.utils import timezone

# Imported now, not in a test: importing the ASGI module runs django.setup(),
# which reconfigures logging and would drop caplog's handler mid-test.
import presence_site.asgi  # noqa: F401
from accounts.models import LoggedInUser
from presence import protocol
from presence.models import Connection
from presence_site.testing import HandshakeRefused, answers_ping, close_code, forgotten
from realtime import protocol as transport

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("layer")]

PASSWORD = "correct-horse-battery-9"


async def settled(communicator) -> None:
    """Skip the frames an endpoint sends on connect: wait for the answer to a ping."""
    await communicator.send_json_to({"type": "ping"})
    while (await communicator.receive_json_from(timeout=5))["type"] != "pong":
        pass


async def next_answer(communicator) -> dict:
    """The next pong or error frame; broadcasts in between (presence diffs) are skipped."""
    while (frame := await communicator.receive_json_from(timeout=5))["type"] not in {"pong", "error"}:
        pass
    return frame


async def drain(communicator) -> list[dict]:
    """Every message the socket sent, up to and including its close."""
    messages = []
    while True:
        message = await communicator.receive_output(timeout=5)
        messages.append(message)
        if message["type"] == "websocket.close":
            return messages


@pytest.fixture
def flood_limits(settings):
    settings.SOCKET_FRAME_BURST = 30
    settings.SOCKET_FRAME_RATE = 10
    settings.SOCKET_FLOOD_STRIKES = 10
    return settings


async def test_a_flood_is_rate_limited_then_closed_with_1008(endpoint, make_user, open_socket, flood_limits):
    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    flooder, *_ = await open_socket(endpoint, alice)
    bystander, *_ = await open_socket(endpoint, bob)
    await settled(flooder)
    await settled(bystander)
    # Pings included: every frame counts. The settle above spent one token.
    for _ in range(1000):
        await flooder.send_to(text_data='{"type":"ping"}')
    messages = await drain(flooder)
    close = messages.pop()
    assert close["code"] == transport.CLOSE_POLICY_VIOLATION
    frames = [m["text"] for m in messages]
    limited = [f for f in frames if '"rate_limited"' in f]
    pongs = [f for f in frames if f == '{"type":"pong"}']
    assert len(limited) == flood_limits.SOCKET_FLOOD_STRIKES
    # The burst, plus what the bucket refilled while the flood was read.
    assert 29 <= len(pongs) <= 29 + 10
    assert await flooder.receive_nothing(timeout=0.2)
    assert await answers_ping(bystander)
    assert await forgotten(alice)


async def test_a_client_that_slows_down_after_rate_limited_is_forgiven(endpoint, make_user, open_socket, settings):
    settings.SOCKET_FRAME_BURST = 3
    settings.SOCKET_FRAME_RATE = 30
    settings.SOCKET_FLOOD_STRIKES = 2
    socket, *_ = await open_socket(endpoint, await database_sync_to_async(make_user)("alice"))
    await settled(socket)
    for _round in range(3):
        # The client's pause is the behaviour under test, not a wait for an
        # event: long enough for the whole burst to refill (3 / 30 per s = 0.1 s).
        await asyncio.sleep(0.3)
        for _ in range(5):  # three answered, two refused: at the strike limit, not over it
            await socket.send_json_to({"type": "ping"})
        frames = [await next_answer(socket) for _ in range(5)]
        assert [f["type"] for f in frames].count("pong") >= 3
        assert [f.get("code") for f in frames].count("rate_limited") <= 2
    # Six refusals in all, over the limit of two, yet each pause forgave them.
    await asyncio.sleep(0.3)
    assert await answers_ping(socket)


async def test_bad_frames_count_towards_the_flood_limit(endpoint, make_user, open_socket, settings):
    settings.SOCKET_FRAME_BURST = 5
    settings.SOCKET_FRAME_RATE = 1
    settings.SOCKET_FLOOD_STRIKES = 3
    socket, *_ = await open_socket(endpoint, await database_sync_to_async(make_user)("alice"))
    await settled(socket)
    for _ in range(20):
        await socket.send_to(text_data="{not json")
    messages = await drain(socket)
    assert messages[-1]["code"] == transport.CLOSE_POLICY_VIOLATION
    codes = [m["text"] for m in messages[:-1]]
    assert sum('"bad_json"' in c for c in codes) >= 3
    assert sum('"rate_limited"' in c for c in codes) == 3


async def test_the_socket_past_the_per_user_limit_is_closed_with_4429(endpoint, make_user, open_socket, settings):
    settings.SOCKET_MAX_PER_USER = 3
    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    sockets = [(await open_socket(endpoint, alice))[0] for _ in range(3)]
    for socket in sockets:
        await settled(socket)
    extra, *_ = await open_socket(endpoint, alice)
    assert await extra.receive_output(timeout=5) == {"type": "websocket.close", "code": 4429}
    assert await database_sync_to_async(Connection.objects.filter(user=alice).count)() == 3
    # Another user is not affected, and a closed socket frees its place.
    await settled((await open_socket(endpoint, bob))[0])
    await sockets[0].disconnect()
    await settled((await open_socket(endpoint, alice))[0])


async def test_a_refused_socket_receives_no_broadcasts(make_user, open_socket, settings):
    # The refused socket was in the presence group before the registration
    # refused it; it must leave the group again.
    settings.SOCKET_MAX_PER_USER = 1
    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    await settled((await open_socket("/ws/presence/", alice))[0])
    refused, *_ = await open_socket("/ws/presence/", alice)
    assert await close_code(refused) == 4429
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if hasattr(layer, "groups"):
        members = layer.groups.get(protocol.PRESENCE_GROUP, {})
        assert len(members) == 1
    await settled((await open_socket("/ws/presence/", bob))[0])
    assert await refused.receive_nothing(timeout=0.3)


DB_SESSIONS = "django.contrib.sessions.backends.db"
# Other engines have no table to join: the check looks up each distinct session.
CACHE_SESSIONS = "django.contrib.sessions.backends.cache"


@pytest.mark.parametrize(
    "engine, ending",
    [
        (DB_SESSIONS, "expired"),
        (DB_SESSIONS, "deleted"),
        (DB_SESSIONS, "deactivated_in_bulk"),
        (CACHE_SESSIONS, "deleted"),
        (CACHE_SESSIONS, "deactivated_in_bulk"),
    ],
)
async def test_a_socket_outliving_its_session_is_closed_at_the_next_check(
    endpoint, make_user, open_socket, settings, engine, ending
):
    settings.SESSION_ENGINE = engine
    settings.SOCKET_SESSION_CHECK_INTERVAL = 0.2
    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    doomed, _, key = await open_socket(endpoint, alice)
    survivor, *_ = await open_socket(endpoint, bob)
    await settled(doomed)
    await settled(survivor)
    if ending == "expired":
        sessions = Session.objects.filter(session_key=key)
        await database_sync_to_async(sessions.update)(expire_date=timezone.now() - timezone.timedelta(seconds=1))
    elif ending == "deleted":
        await database_sync_to_async(import_module(engine).SessionStore(session_key=key).delete)()
    else:
        # A bulk update sends no signal: only the check can see it.
        users = type(alice).objects.filter(pk=alice.pk)
        await database_sync_to_async(users.update)(is_active=False)
    assert await close_code(doomed) == transport.CLOSE_SESSION_ENDED
    assert await answers_ping(survivor)
    assert await forgotten(alice)


async def test_a_password_change_closes_the_other_sessions_sockets(endpoint, make_user, open_socket):
    bob = await database_sync_to_async(make_user)("bob")
    laptop, laptop_client, old_key = await open_socket(endpoint, bob)
    phone, phone_client, _ = await open_socket(endpoint, bob)
    await settled(laptop)
    await settled(phone)

    response = await sync_to_async(laptop_client.post)(
        "/accounts/password/",
        {
            "old_password": PASSWORD,
            "new_password1": "another-horse-battery-7",
            "new_password2": "another-horse-battery-7",
        },
    )
    assert response.status_code == 302 and response["Location"] == "/accounts/password/done/"
    assert await close_code(phone) == transport.CLOSE_SESSION_ENDED
    assert await answers_ping(laptop)

    new_key = laptop_client.cookies["sessionid"].value
    assert new_key != old_key
    # The laptop's socket follows its session's new key, so later checks keep it; the phone's row goes
    # once its closed socket is forgotten (in a round of closes, a moment after the close).
    session_keys = database_sync_to_async(lambda: list(Connection.objects.values_list("session_key", flat=True)))
    deadline = asyncio.get_running_loop().time() + 5
    while (keys := await session_keys()) != [new_key] and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert keys == [new_key]
    logged_in = await database_sync_to_async(lambda: list(LoggedInUser.objects.values_list("session_key", flat=True)))()
    assert logged_in == [new_key]
    assert (await sync_to_async(laptop_client.get)("/")).status_code == 200
    assert (await sync_to_async(phone_client.get)("/")).status_code == 302


async def test_refusals_and_closes_are_logged_without_body_or_cookie(endpoint, make_user, open_socket, caplog):
    alice = await database_sync_to_async(make_user)("alice")
    communicator, _, key = await open_socket(endpoint, alice, address=("203.0.113.9", 50123))
    await settled(communicator)
    secret = "hunter2-secret-body"
    with caplog.at_level(logging.INFO, logger="realtime.sockets"):
        await communicator.send_to(text_data='{"type":"no.such.type","body":"' + secret + '"}')
        assert (await next_answer(communicator))["code"] == "unknown_type"
        await communicator.send_to(text_data="{" + secret)
        assert (await next_answer(communicator))["code"] == "bad_json"
        await communicator.send_to(bytes_data=secret.encode())
        assert await close_code(communicator) == 1003
    await communicator.disconnect()

    lines = [record.getMessage() for record in caplog.records if record.name == "realtime.sockets"]
    assert any("reason=unknown_type" in line and "alice" in line and "203.0.113.9" in line for line in lines)
    assert any("reason=bad_json" in line for line in lines)
    assert any("code=1003" in line and "reason=binary frame" in line and "203.0.113.9" in line for line in lines)
    assert not any(secret in line or key in line for line in caplog.text.splitlines())


async def test_a_refused_handshake_is_logged_with_its_origin(endpoint, make_user, open_socket, caplog):
    alice = await database_sync_to_async(make_user)("alice")
    with caplog.at_level(logging.INFO, logger="realtime.sockets"):
        with pytest.raises(HandshakeRefused) as refused:
            await open_socket(endpoint, alice, origin="http://evil.example")
        key = refused.value.session_key
        with pytest.raises(HandshakeRefused):
            await open_socket(endpoint, session_key=key, origin=None)
    lines = [record.getMessage() for record in caplog.records if record.name == "realtime.sockets"]
    assert any("refused handshake" in line and "'http://evil.example'" in line for line in lines)
    assert any("refused handshake" in line and "origin=None" in line for line in lines)
    assert key not in caplog.text


async def test_the_anonymous_close_is_logged(endpoint, open_socket, caplog):
    with caplog.at_level(logging.INFO, logger="realtime.sockets"):
        socket, *_ = await open_socket(endpoint)
        assert await close_code(socket) == 4401
    assert any("code=4401" in r.getMessage() and "user=anonymous" in r.getMessage() for r in caplog.records)


async def test_a_password_changed_by_an_admin_closes_all_that_users_sockets(endpoint, make_user, open_socket):
    bob, root = await database_sync_to_async(
        lambda: (make_user("bob"), make_user("root", is_staff=True, is_superuser=True))
    )()
    laptop, laptop_client, _ = await open_socket(endpoint, bob)
    admin_socket, admin_client, _ = await open_socket(endpoint, root)
    await settled(laptop)
    await settled(admin_socket)
    response = await sync_to_async(admin_client.post)(
        f"/admin/auth/user/{bob.pk}/password/",
        {"password1": "another-horse-battery-7", "password2": "another-horse-battery-7", "usable_password": "true"},
    )
    assert response.status_code == 302 and response["Location"] == f"/admin/auth/user/{bob.pk}/change/"
    assert await close_code(laptop) == transport.CLOSE_SESSION_ENDED
    assert await answers_ping(admin_socket)
    assert not await database_sync_to_async(LoggedInUser.objects.filter(user=bob).exists)()
    assert (await sync_to_async(laptop_client.get)("/")).status_code == 302


async def test_deactivating_a_user_logs_them_out_everywhere_and_closes_their_sockets(endpoint, make_user, open_socket):
    bob, alice = await database_sync_to_async(lambda: (make_user("bob"), make_user("alice")))()
    laptop, laptop_client, laptop_key = await open_socket(endpoint, bob)
    phone, *_ = await open_socket(endpoint, bob)
    bystander, *_ = await open_socket(endpoint, alice)
    for socket in (laptop, phone, bystander):
        await settled(socket)

    def deactivate():
        # What staff do in the admin: untick "Active" and save.
        bob.refresh_from_db()
        bob.is_active = False
        bob.save()

    await database_sync_to_async(deactivate)()
    assert await close_code(laptop) == transport.CLOSE_SESSION_ENDED
    assert await close_code(phone) == transport.CLOSE_SESSION_ENDED
    assert await answers_ping(bystander)
    assert not await database_sync_to_async(Session.objects.filter(session_key=laptop_key).exists)()
    assert not await database_sync_to_async(LoggedInUser.objects.filter(user=bob).exists)()
    assert (await sync_to_async(laptop_client.get)("/")).status_code == 302
    again, *_ = await open_socket(endpoint, session_key=laptop_key)
    assert await close_code(again) == 4401


@pytest.mark.parametrize(
    "text",
    [
        "[" * 1000 + "]" * 1000,
        '{"type": "ping", "x": ' + "[" * 20_000 + "]" * 20_000 + "}",
        '{"a":' * 500 + "1" + "}" * 500,
    ],
)
async def test_a_frame_nested_too_deeply_is_bad_json_and_the_socket_stays_open(
    endpoint, make_user, open_socket, text, caplog
):
    socket, *_ = await open_socket(endpoint, await database_sync_to_async(make_user)("alice"))
    await settled(socket)
    with caplog.at_level(logging.INFO):
        await socket.send_to(text_data=text)
        error = await next_answer(socket)
    assert error["type"] == "error" and error["code"] == "bad_json" and "deeper" in error["detail"]
    await settled(socket)
    assert not any(record.levelno >= logging.ERROR for record in caplog.records)


async def test_brackets_inside_strings_do_not_count_as_nesting(endpoint, make_user, open_socket):
    socket, *_ = await open_socket(endpoint, await database_sync_to_async(make_user)("alice"))
    await settled(socket)
    await socket.send_to(text_data='{"type": "ping", "note": "' + "[{" * 200 + '\\"' + '"}')
    assert (await next_answer(socket))["type"] == "pong"


@pytest.mark.parametrize("path", ["/ws/nosuch/", "/ws/chat/a%2fb/", "/ws/chat/a/b/", "/ws/", "/ws/presence/extra/"])
@pytest.mark.parametrize("logged_in", [True, False])
async def test_a_path_that_matches_no_endpoint_is_accepted_and_closed_4404(
    make_user, open_socket, path, logged_in, caplog
):
    user = await database_sync_to_async(make_user)("alice") if logged_in else None
    with caplog.at_level(logging.INFO):
        socket, *_ = await open_socket(path, user)
        assert await close_code(socket) == 4404
    assert not any(record.levelno >= logging.ERROR for record in caplog.records)
    assert any("no such endpoint" in record.getMessage() for record in caplog.records)
