"""The housekeeping jobs in a real Daphne process: what `make run`, the stack and compose each run."""

import asyncio
from collections.abc import Callable

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from accounts.models import LoggedInUser
from accounts.services import logged_in_user_record
from activity.jobs import HOUSEKEEPING_LEASE, SAMPLE_LEASE
from activity.models import Lease, OnlineSample, UserSeenDay
from presence_site.testing import LiveSocket, live_cookie
from realtime.runtime import SERVER_ID

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Wait until check() (a database read) is true, at most timeout seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    read = database_sync_to_async(check)
    while not await read():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_the_first_socket_starts_the_sample_and_the_clean_up_of_ended_sessions(live_server_factory, make_user):
    server = live_server_factory()

    def prepare() -> str:
        alice, bob = make_user("alice"), make_user("bob")
        logged_in_user_record(user=bob, session_key="ended-long-ago")  # its session is gone
        return live_cookie(alice)

    cookie = await database_sync_to_async(prepare)()
    socket = await LiveSocket.open(server, "/ws/presence/", cookie)
    assert (await socket.receive())["type"] == "presence.snapshot"

    assert await eventually(lambda: OnlineSample.objects.exists())
    assert await database_sync_to_async(lambda: list(OnlineSample.objects.values_list("online", flat=True)))() == [1]
    today = timezone.localdate()
    assert await eventually(lambda: UserSeenDay.objects.filter(user__username="alice", day=today).exists())
    assert await eventually(lambda: not LoggedInUser.objects.filter(user__username="bob").exists())
    assert await database_sync_to_async(LoggedInUser.objects.filter(user__username="alice").exists)()
    holders = await database_sync_to_async(lambda: dict(Lease.objects.values_list("name", "holder")))()
    assert set(holders) == {SAMPLE_LEASE, HOUSEKEEPING_LEASE}
    assert SERVER_ID not in holders.values()  # the live process took them, not this test's
    await socket.close()
