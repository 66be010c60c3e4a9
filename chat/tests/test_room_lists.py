"""How often a room's room.presence list goes out: every CHAT_PRESENCE_WINDOW, longer in a crowd (docs/protocol.md)."""

import pytest

from chat import protocol
from chat.consumers import ROOM_LIST_MAX_WINDOW, RoomPresence
from realtime.runtime import runtime


@pytest.mark.parametrize(("members_here", "window"), [(1, 0.25), (200, 0.25), (400, 0.5), (1000, 1.25), (5000, 5.0)])
async def test_a_rooms_list_window_grows_with_its_members_here(settings, members_here, window):
    settings.CHAT_PRESENCE_WINDOW = 0.25
    current = runtime()
    # The process's sockets in the room, as the fan-out holds them.
    current.fanout.groups[protocol.room_group("crowd")] = {f"inbox#{n}" for n in range(members_here)}
    lists = current.local(RoomPresence).lists
    assert lists.window("crowd") == pytest.approx(window)
    assert lists.window("empty") == pytest.approx(0.25)
    assert lists.window("crowd") <= ROOM_LIST_MAX_WINDOW
