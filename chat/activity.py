"""room.activity: each member's counts, sent to their own sockets when their rooms get messages.

Off the sender's path: storing a message only notes its room here (a dict
write); a coalesced task per room and process, at most one per
CHAT_ACTIVITY_WINDOW, reads the counts of every member who should hear of it
from the read markers (one grouped query, and one for their sockets), and
hands the frames to the layer as one message per process that holds any of
those sockets. So a burst of messages into a room of 1,000 members costs two
queries and a few layer messages per window, however many messages it held;
members with no socket, or whose only sockets are in that room (they get the
messages themselves), cost nothing. A message per member (their user group)
cost about 1 ms of CPU each, a second per flush for 1,000 (docs/benchmarks.md).
"""

from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from chat import metrics, protocol
from chat.models import Room
from chat.selectors import room_activity_members, room_newest_message
from realtime.coalesce import Coalescer
from realtime.fanout import send_to_sockets
from realtime.protocol import dumps
from realtime.runtime import Runtime, runtime


def _newer(old: tuple[Room, dict], new: tuple[Room, dict]) -> tuple[Room, dict]:
    # Messages stored by concurrent handlers can reach here out of id order.
    return new if new[1]["id"] >= old[1]["id"] else old


class RoomActivity:
    """room.activity for the rooms that got messages on this process: one flush per room per window."""

    def __init__(self, runtime: Runtime) -> None:
        self.rooms = Coalescer(runtime, self._publish, window=lambda room: settings.CHAT_ACTIVITY_WINDOW, merge=_newer)

    async def _publish(self, slug: str, batch: dict[str, Any]) -> bool:
        room, message = batch["newest"]

        def read() -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
            # The counts, then the newest message: a message stored after this batch was taken (its own flush
            # follows) may be in the counts already, and is then the last message too, so the two agree.
            return room_activity_members(room=room), room_newest_message(room=room)

        members, newest = await database_sync_to_async(read)()
        if newest is not None and newest["id"] > message["id"]:
            message = newest
        metrics.ACTIVITY_FLUSHES.inc()
        frames: dict[str, str] = {}
        # Members mostly share their counts (all one message behind): each distinct frame is serialized once.
        texts: dict[tuple, str] = {}
        for member in members:
            key = (member["title"], member["unread"], member["mentions"], member["last_read"])
            text = texts.get(key)
            if text is None:
                text = texts[key] = dumps(
                    protocol.activity_frame(
                        room=slug,
                        title=member["title"],
                        kind=room.kind,
                        unread=member["unread"],
                        mentions=member["mentions"],
                        last_read=member["last_read"],
                        message=message,
                    )
                )
            for address in member["sockets"]:
                frames[address] = text
        if not frames:
            return True
        # Not retried here: when the layer fails, the coalescer reads the counts again and sends them anew.
        delivered = await send_to_sockets(frames, label="room_activity")
        if delivered:
            metrics.ACTIVITY_FRAMES.inc(len(frames))
        return delivered


def room_activity_changed(room: Room, message: dict[str, Any]) -> None:
    """A message was stored in a room on this process: its members hear of it within the window."""
    runtime().local(RoomActivity).rooms.add(room.slug, "newest", (room, message))
