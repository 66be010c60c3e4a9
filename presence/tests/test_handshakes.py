"""Sockets that open at the same moment (a storm of reconnects): each is its own user's, and presence stays exact.

Their sessions, users and registrations are read and written in rounds
(realtime.batch); what each socket and each watcher sees must be what it
would be had they come one at a time.
"""

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.contrib.sessions.models import Session

from presence.models import Connection
from presence_site.testing import answers_ping, close_code, session_cookie
from realtime import protocol as transport

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("layer")]


async def watch(open_socket, user) -> tuple:
    socket, *_ = await open_socket("/ws/presence/", user)
    snapshot = await socket.receive_json_from(timeout=5)
    assert snapshot["type"] == "presence.snapshot"
    return socket, snapshot


def names(diffs: list[dict], key: str) -> list[str]:
    return sorted(entry["username"] for diff in diffs for entry in diff[key])


async def diffs_until(watcher, online_count: int, *, joins=(), leaves=(), timeout: float = 10) -> list[dict]:
    """Every presence.diff the watcher gets until it has said online_count and named these joins and leaves."""
    diffs = []
    while True:
        frame = await watcher.receive_json_from(timeout=timeout)
        if frame["type"] != "presence.diff":
            continue
        diffs.append(frame)
        # The count is read when a diff goes out, so it may lead the joins that a later diff names.
        if (
            frame["online_count"] == online_count
            and set(joins) <= set(names(diffs, "joins"))
            and set(leaves) <= set(names(diffs, "leaves"))
        ):
            return diffs


async def test_sockets_that_open_together_each_count_for_their_own_user_once(make_user, open_socket):
    alice = await database_sync_to_async(make_user)("alice")
    users = await database_sync_to_async(lambda: [make_user(f"user{n:02}") for n in range(30)])()
    sessions = await database_sync_to_async(lambda: [session_cookie(user)[1] for user in users])()
    watcher, _ = await watch(open_socket, alice)

    opened = await asyncio.gather(*(open_socket("/ws/presence/", session_key=key) for key in sessions))
    assert all([await answers_ping(socket) for socket, *_ in opened])

    expected = [user.username for user in users]
    diffs = await diffs_until(watcher, online_count=31, joins=expected)
    assert names(diffs, "joins") == ["alice", *(user.username for user in users)]
    rows = await database_sync_to_async(lambda: dict(Connection.objects.values_list("session_key", "user__username")))()
    assert {key: rows[key] for key in sessions} == {key: user.username for key, user in zip(sessions, users)}


async def test_one_user_opening_tabs_together_is_one_join_and_one_leave(make_user, open_socket):
    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    watcher, _ = await watch(open_socket, alice)
    await diffs_until(watcher, online_count=1, joins=["alice"])

    tabs = await asyncio.gather(*(open_socket("/ws/presence/", bob) for _ in range(6)))
    assert names(await diffs_until(watcher, online_count=2, joins=["bob"]), "joins") == ["bob"]
    await asyncio.gather(*(tab.disconnect() for tab, *_ in tabs))
    diffs = await diffs_until(watcher, online_count=1, leaves=["bob"])
    assert names(diffs, "leaves") == ["bob"] and names(diffs, "joins") == []


async def test_refused_sessions_among_many_are_refused_alone(make_user, open_socket):
    good = await database_sync_to_async(lambda: [make_user(f"good{n}") for n in range(8)])()
    mallory, gone, inactive = await database_sync_to_async(
        lambda: (make_user("mallory"), make_user("gone"), make_user("inactive"))
    )()

    def sessions() -> tuple[list[str], list[str]]:
        keys = [session_cookie(user)[1] for user in (*good, mallory, gone, inactive)]
        # A password changed elsewhere, a session deleted by an admin, an account deactivated.
        mallory.set_password("another-horse-battery-7")
        mallory.save()
        Session.objects.filter(session_key=keys[-2]).delete()
        inactive.is_active = False
        inactive.save()
        return keys[:-3], keys[-3:]

    good_keys, bad_keys = await database_sync_to_async(sessions)()
    sockets = await asyncio.gather(
        *(open_socket("/ws/presence/", session_key=key) for key in (*good_keys, *bad_keys)),
        open_socket("/ws/presence/"),  # no session at all
    )
    good_sockets, bad_sockets = sockets[: len(good_keys)], sockets[len(good_keys) :]
    assert [await close_code(socket) for socket, *_ in bad_sockets] == [transport.CLOSE_NOT_LOGGED_IN] * 4
    assert all([await answers_ping(socket) for socket, *_ in good_sockets])


async def test_a_users_tabs_opening_together_beyond_the_limit_are_refused(make_user, open_socket, settings):
    settings.SOCKET_MAX_PER_USER = 3
    bob = await database_sync_to_async(make_user)("bob")
    tabs = await asyncio.gather(*(open_socket("/ws/presence/", bob) for _ in range(5)))
    opened = [tab for tab, *_ in tabs if await answers_ping(tab)]
    assert len(opened) == 3
    assert await database_sync_to_async(Connection.objects.filter(user=bob).count)() == 3
