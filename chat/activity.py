"""room.activity: each member's counts, sent to their own sockets when their rooms get messages.

Off the sender's path: storing a message only notes its room here (a dict
write); a coalesced task per room and process, at most one per
CHAT_ACTIVITY_WINDOW, then reads the counts of every member who should hear
of it in one grouped query from the read markers, and sends each of them one
frame through their user group. So a burst of messages into a room of 1,000
members costs one query and at most one frame per listening member per
window, however many messages it held; members with no socket, or whose
only sockets are in that room (they get the messages themselves), cost nothing.
"""

import asyncio
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from chat import metrics, protocol
from chat.models import Room
from chat.selectors import room_activity_members
from presence.protocol import user_group
from realtime.broadcast import broadcast
from realtime.coalesce import Coalescer
from realtime.runtime import Runtime, runtime

# Sends to the layer in flight at once while a flush tells a room's members.
SEND_CONCURRENCY = 64


def _newer(old: tuple[Room, dict], new: tuple[Room, dict]) -> tuple[Room, dict]:
    # Messages stored by concurrent handlers can reach here out of id order.
    return new if new[1]["id"] >= old[1]["id"] else old


class RoomActivity:
    """room.activity for the rooms that got messages on this process: one flush per room per window."""

    def __init__(self, runtime: Runtime) -> None:
        self.rooms = Coalescer(runtime, self._publish, window=lambda: settings.CHAT_ACTIVITY_WINDOW, merge=_newer)

    async def _publish(self, slug: str, batch: dict[str, Any]) -> bool:
        room, message = batch["newest"]
        # Read after the last message of the batch: the counts are the exact ones after it.
        members = await database_sync_to_async(room_activity_members)(room=room)
        metrics.ACTIVITY_FLUSHES.inc()
        delivered = True
        for start in range(0, len(members), SEND_CONCURRENCY):
            sends = [
                broadcast(
                    user_group(member["user_id"]),
                    protocol.activity_frame(
                        room=slug,
                        title=member["title"],
                        kind=room.kind,
                        unread=member["unread"],
                        mentions=member["mentions"],
                        last_read=member["last_read"],
                        message=message,
                    ),
                    label="room_activity",
                    # Not retried one by one: the coalescer reads the counts again when it retries.
                    retry=False,
                )
                for member in members[start : start + SEND_CONCURRENCY]
            ]
            results = await asyncio.gather(*sends)
            metrics.ACTIVITY_FRAMES.inc(sum(results))
            delivered = delivered and all(results)
        return delivered


def room_activity_changed(room: Room, message: dict[str, Any]) -> None:
    """A message was stored in a room on this process: its members hear of it within the window."""
    runtime().local(RoomActivity).rooms.add(room.slug, "newest", (room, message))
