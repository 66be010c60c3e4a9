"""Per-process fan-out: one layer message per process per group, delivered here to this process's sockets.

With the stock pattern every socket joins its groups on the channel layer, so a
broadcast to a room of 1,000 sockets is 1,000 layer messages (on
RedisChannelLayer: 1,000 Redis list pushes and 1,000 blocking pops), each
decoded and dispatched by its own consumer task. Here the process joins each
group once, with a channel of its own, and hands each message to its sockets
in a loop: a frame forward is written to every socket at once, anything else
goes to the socket's own channel as before.

Nothing here is shared state: the registry holds only this process's own open
sockets, per event loop. The layer stays lossy, as before: a process that
misses a message misses it for its sockets, which resync from the database
when they reconnect.
"""

import asyncio
import logging
import weakref
from typing import Any, Protocol

from django.conf import settings

from presence import protocol

logger = logging.getLogger(__name__)


class Member(Protocol):
    channel_name: str

    async def frame_forward(self, event: dict[str, Any]) -> None: ...


class LocalGroup:
    """One group as seen by one process: its sockets here, and the channel that receives for them."""

    def __init__(self, name: str, layer, channel: str) -> None:
        self.name = name
        self.layer = layer
        self.channel = channel
        self.members: dict[str, Member] = {}
        self.task: asyncio.Task | None = None


class Fanout:
    """The groups that this process's sockets are in (one event loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.groups: dict[str, LocalGroup] = {}
        # Joins and leaves of one group must not interleave around the layer calls.
        self.lock = asyncio.Lock()
        self.refresh_task: asyncio.Task | None = None

    async def join(self, group: str, member: Member, layer) -> None:
        """Add a socket to a group; the first one here subscribes this process to it."""
        async with self.lock:
            local = self.groups.get(group)
            if local is None:
                channel = await layer.new_channel()
                await layer.group_add(group, channel)
                local = self.groups[group] = LocalGroup(group, layer, channel)
                local.task = self.loop.create_task(self._receive(local))
                if self.refresh_task is None:
                    self.refresh_task = self.loop.create_task(self._refresh())
            else:
                # Renewed on every join: a Redis that restarted (or failed over)
                # has forgotten the membership, and the sockets that reconnect
                # after it must not join a group this process no longer hears.
                await layer.group_add(group, local.channel)
            local.members[member.channel_name] = member

    async def renew(self) -> None:
        """After Redis restarted: listen on a fresh channel per group and join the groups again.

        The new Redis has forgotten every membership, and a receive that was
        waiting on the old one may never wake; sockets that reconnect join
        these groups, so they must be live before the clients come back.
        """
        async with self.lock:
            for local in list(self.groups.values()):
                if local.task is not None:
                    local.task.cancel()
                    await asyncio.gather(local.task, return_exceptions=True)
                try:
                    local.channel = await local.layer.new_channel()
                    await local.layer.group_add(local.name, local.channel)
                except Exception:
                    logger.warning("could not join group %s again after a restart", local.name, exc_info=True)
                local.task = self.loop.create_task(self._receive(local))

    async def leave(self, group: str, member: Member) -> None:
        """Remove a socket from a group; the last one here unsubscribes this process."""
        async with self.lock:
            local = self.groups.get(group)
            if local is None or local.members.pop(member.channel_name, None) is None or local.members:
                return
            del self.groups[group]
            if local.task is not None:
                local.task.cancel()
                await asyncio.gather(local.task, return_exceptions=True)
            if not self.groups and self.refresh_task is not None:
                self.refresh_task.cancel()
                await asyncio.gather(self.refresh_task, return_exceptions=True)
                self.refresh_task = None
            try:
                await local.layer.group_discard(group, local.channel)
            except Exception:
                # Membership expires on its own (group_expiry); nothing is delivered here any more.
                logger.warning("could not leave group %s on the channel layer", group, exc_info=True)

    async def _receive(self, local: LocalGroup) -> None:
        while True:
            try:
                message = await local.layer.receive(local.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Redis went away: the sockets' own channels fail too and close
                # them (1011), and clients resync when they reconnect.
                logger.warning("fan-out of group %s could not receive; retrying", local.name, exc_info=True)
                await asyncio.sleep(1)
                try:
                    # A restarted Redis has forgotten the membership.
                    await local.layer.group_add(local.name, local.channel)
                except Exception:
                    pass
                continue
            await self.deliver(local, message)

    async def deliver(self, local: LocalGroup, message: dict[str, Any]) -> None:
        members = list(local.members.values())
        if message.get("type") == protocol.EVENT_FORWARD:
            for member in members:
                try:
                    await member.frame_forward(message)
                except Exception:
                    logger.debug("a forward to %s failed", member.channel_name, exc_info=True)
        else:
            # Other events run in each consumer's own task, as if sent to the group.
            for member in members:
                try:
                    await local.layer.send(member.channel_name, message)
                except Exception:
                    logger.warning("an event for %s was dropped", member.channel_name, exc_info=True)

    async def _refresh(self) -> None:
        """Renew this process's group memberships before the layer's group_expiry drops them."""
        interval = max(1.0, min(3600.0, settings.CHANNEL_GROUP_EXPIRY / 2))
        while True:
            await asyncio.sleep(interval)
            for local in list(self.groups.values()):
                try:
                    await local.layer.group_add(local.name, local.channel)
                except Exception:
                    logger.warning("could not renew group %s", local.name, exc_info=True)


_fanouts: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Fanout]" = weakref.WeakKeyDictionary()


def fanout() -> Fanout:
    """This process's fan-out registry, for the running event loop."""
    loop = asyncio.get_running_loop()
    found = _fanouts.get(loop)
    if found is None:
        found = _fanouts[loop] = Fanout(loop)
    return found
