from presence import protocol
from presence.models import Connection
from presence.runtime import hub
from presence.sockets import SocketConsumer


class PresenceConsumer(SocketConsumer):
    """/ws/presence/: a snapshot of who is online, then diffs as people come and go."""

    endpoint = Connection.Endpoint.PRESENCE
    client_types = {**SocketConsumer.client_types, protocol.PRESENCE_STATE: "on_presence_state"}

    def groups_for(self) -> tuple[str, ...]:
        return (protocol.PRESENCE_GROUP,)

    async def opened(self) -> None:
        await self.send(text_data=await hub().snapshot_text(after=self.registered_at))
