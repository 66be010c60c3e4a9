from typing import Any

from channels.db import database_sync_to_async

from presence import protocol
from presence.models import Connection
from presence.selectors import presence_online_users, presence_recently_seen
from presence.sockets import SocketConsumer


class PresenceConsumer(SocketConsumer):
    """/ws/presence/: a snapshot of who is online, then diffs as people come and go."""

    endpoint = Connection.Endpoint.PRESENCE
    client_types = {**SocketConsumer.client_types, protocol.PRESENCE_STATE: "on_presence_state"}

    def groups_for(self) -> tuple[str, ...]:
        return (protocol.PRESENCE_GROUP,)

    async def opened(self) -> None:
        users, recent = await database_sync_to_async(_snapshot)()
        await self.send_frame(protocol.snapshot_frame(users, recent))


def _snapshot() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return presence_online_users(), presence_recently_seen()
