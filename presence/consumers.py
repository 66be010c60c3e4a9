from presence import protocol
from presence.hub import hub
from presence.sockets import TrackedSocket


class PresenceConsumer(TrackedSocket):
    """/ws/presence/: a snapshot of who is online, then diffs as people come and go."""

    endpoint = "presence"

    def topic_groups(self) -> tuple[str, ...]:
        return (protocol.PRESENCE_GROUP,)

    async def opened(self) -> None:
        await self.send(text_data=await hub().snapshot_text(after=self.registered_at))
