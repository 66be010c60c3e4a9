"""Per-process fan-out: one layer message per process per group, delivered here to this process's sockets.

With the stock pattern every socket joins its groups on the channel layer, so a
broadcast to a room of 1,000 sockets is 1,000 layer messages (on
RedisChannelLayer: 1,000 Redis list pushes and 1,000 blocking pops), each
decoded and dispatched by its own consumer task. Here the process joins each
group once, with a channel of its own, and hands each message to its sockets
in a loop: a frame forward is written to every socket at once, anything else
goes to the socket's own channel as before.

The few events addressed to one socket (a session that ended) go the same
way: a socket has no channel of its own on the layer, only an address inside
its process's inbox channel (`send_to_socket`), and the process hands what
arrives there to the socket. A channel per socket cost each idle socket a
receive waiting on the layer (its tasks and queue): about 6 KiB, a seventh of
a socket's memory (docs/benchmarks.md).

Nothing here is shared state: the registry holds only this process's own open
sockets, per event loop. The layer stays lossy, as before: a process that
misses a message misses it for its sockets, which resync from the database
when they reconnect.
"""

import asyncio
import itertools
import logging
from typing import Any, Protocol

from django.conf import settings

from presence import metrics, protocol
from presence.loops import keep, per_loop

logger = logging.getLogger(__name__)

# Seconds a socket, or this registry, waits for one channel-layer call before it gives up on it.
LAYER_TIMEOUT = 5.0


class Member(Protocol):
    channel_name: str

    async def frame_forward(self, event: dict[str, Any]) -> None: ...

    async def dispatch(self, message: dict[str, Any]) -> None: ...


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
        # Receives cancelled but not finished yet, and events being handled (kept so they are not collected).
        self.stopping: set[asyncio.Task] = set()
        self.handling: set[asyncio.Task] = set()
        # The process's inbox: events sent to one of its sockets arrive here, with the socket's address.
        self.inbox: str | None = None
        self.inbox_layer = None
        self.inbox_task: asyncio.Task | None = None
        self.sockets: dict[str, Member] = {}
        self.socket_numbers = itertools.count(1)

    async def address(self, layer) -> str:
        """A new address for a socket of this process, inside its inbox channel."""
        if self.inbox is None:
            self.inbox = await layer.new_channel()
            self.inbox_layer = layer
        return f"{self.inbox}{ADDRESS_SEPARATOR}{next(self.socket_numbers)}"

    def attach(self, member: Member) -> None:
        """Deliver what arrives for this socket's address; the first socket starts the inbox's receive."""
        self.sockets[member.channel_name] = member
        if self.inbox_task is None:
            self.inbox_task = self.loop.create_task(self._receive_inbox())

    def detach(self, member: Member) -> None:
        """Forget a socket; the last one stops the inbox's receive (what arrives later waits on the layer)."""
        self.sockets.pop(member.channel_name, None)
        if not self.sockets and self.inbox_task is not None:
            self._cancel(self.inbox_task)
            self.inbox_task = None

    async def _receive_inbox(self) -> None:
        async def lost(error: Exception) -> None:
            # Redis went away: every socket here is deaf to what is sent to
            # it, so each closes with 4503 as its own receive would have.
            metrics.LAYER_ERRORS.labels("receive").inc()
            logger.warning("this process's socket inbox could not receive (%s)", type(error).__name__)
            for member in list(self.sockets.values()):
                self._handle(member, {"type": "layer.lost"})
            await asyncio.sleep(1)

        async def arrived(message: dict[str, Any]) -> None:
            member = self.sockets.get(message.pop(ADDRESS_KEY, None))
            if member is not None:
                self._handle(member, message)

        # Until detach() or renew() replaces this task.
        await self._receive_until(self.inbox_layer, self.inbox, lambda this: self.inbox_task is this, arrived, lost)

    @staticmethod
    async def _receive_until(layer, channel: str, current, arrived, failed) -> None:
        """Receive on a channel while current(this task) holds, handing each message to arrived().

        Checked on every turn: a receive cancelled inside redis-py can end in a
        ConnectionError instead of CancelledError, and a loop that kept going
        held the event loop's shutdown for good.
        """
        this = asyncio.current_task()
        while current(this) and not this.cancelling():
            try:
                message = await layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if not current(this) or this.cancelling():
                    return
                await failed(error)
                continue
            await arrived(message)

    def _handle(self, member: Member, message: dict[str, Any]) -> None:
        # In a task of its own: a handler may close the socket, which waits out the leave grace.
        keep(self.handling, self.loop.create_task(member.dispatch(message)), "a socket failed to handle an event")

    def _cancel(self, task: asyncio.Task) -> None:
        if not task.done():
            task.cancel()
            self.stopping.add(task)
            task.add_done_callback(self.stopping.discard)

    async def join(self, group: str, member: Member, layer) -> None:
        """Add a socket to a group; the first one here subscribes this process to it."""
        async with self.lock:
            local = self.groups.get(group)
            if local is None:
                channel = await layer.new_channel()
                await layer.group_add(group, channel)
                local = self.groups[group] = LocalGroup(group, layer, channel)
                self._listen(local)
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
                self._stop_listening(local)
                old_channel, local.channel = local.channel, await local.layer.new_channel()
                try:
                    await asyncio.wait_for(local.layer.group_add(local.name, local.channel), LAYER_TIMEOUT)
                    # A replica promoted by Sentinel still has the old membership: each message would come twice.
                    await asyncio.wait_for(local.layer.group_discard(local.name, old_channel), LAYER_TIMEOUT)
                except Exception:
                    logger.warning("could not join group %s again after a restart", local.name, exc_info=True)
                self._listen(local)
            # The inbox's receive may be waiting on the old Redis too.
            if self.inbox_task is not None:
                self._cancel(self.inbox_task)
                self.inbox_task = self.loop.create_task(self._receive_inbox())

    async def leave(self, group: str, member: Member) -> None:
        """Remove a socket from a group; the last one here unsubscribes this process."""
        async with self.lock:
            local = self.groups.get(group)
            if local is None or local.members.pop(member.channel_name, None) is None or local.members:
                return
            del self.groups[group]
            self._stop_listening(local)
            if not self.groups and self.refresh_task is not None:
                self.refresh_task.cancel()
                self.refresh_task = None
            try:
                await asyncio.wait_for(local.layer.group_discard(group, local.channel), LAYER_TIMEOUT)
            except Exception:
                # Membership expires on its own (group_expiry); nothing is delivered here any more.
                logger.warning("could not leave group %s on the channel layer", group, exc_info=True)

    def _listen(self, local: LocalGroup) -> None:
        local.task = self.loop.create_task(self._receive(local, local.channel))

    def _stop_listening(self, local: LocalGroup) -> None:
        """Cancel the group's receive without waiting for it.

        A receive cancelled while Redis restarts can take its time to finish
        (seen: minutes, inside the layer's connection handling); waited for
        under the lock, it held every join of this process, so every socket
        that connected here was refused.
        """
        task, local.task = local.task, None
        if task is not None:
            self._cancel(task)

    async def _receive(self, local: LocalGroup, channel: str) -> None:
        async def failed(error: Exception) -> None:
            # Redis went away: the inbox's receive fails too and closes the
            # sockets with 4503 (with CHANNEL_FANOUT=channel, their own
            # receives do); clients resync when they reconnect.
            logger.warning("fan-out of group %s could not receive; retrying", local.name, exc_info=error)
            await asyncio.sleep(1)
            try:
                # A restarted Redis has forgotten the membership.
                await asyncio.wait_for(local.layer.group_add(local.name, channel), LAYER_TIMEOUT)
            except Exception:
                pass

        async def arrived(message: dict[str, Any]) -> None:
            if local.channel == channel:
                await self.deliver(local, message)

        # Until the group listens on another channel (renew) or is left.
        def current(this: asyncio.Task) -> bool:
            return local.channel == channel and local.task is this

        await self._receive_until(local.layer, channel, current, arrived, failed)

    async def deliver(self, local: LocalGroup, message: dict[str, Any]) -> None:
        members = list(local.members.values())
        if message.get("type") == protocol.EVENT_FORWARD:
            for member in members:
                try:
                    await member.frame_forward(message)
                except Exception:
                    logger.debug("a forward to %s failed", member.channel_name, exc_info=True)
        else:
            for member in members:
                self._handle(member, message)

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


# A socket's address is its process's inbox channel, this separator and a number of its own. "#" appears in
# no channel name of any layer (channels allows letters, digits, "-", "_", "." and one "!").
ADDRESS_SEPARATOR = "#"
# The key that carries the address in an event sent to the inbox.
ADDRESS_KEY = "__socket__"


async def send_to_socket(layer, address: str, event: dict[str, Any]) -> None:
    """Send an event to one socket, on whichever process holds it.

    An address inside a process's inbox (CHANNEL_FANOUT=process) goes to that
    inbox; a plain channel name (CHANNEL_FANOUT=channel) is sent to directly.
    """
    inbox, separator, _ = address.partition(ADDRESS_SEPARATOR)
    if separator:
        await layer.send(inbox, {**event, ADDRESS_KEY: address})
    else:
        await layer.send(address, event)


async def sockets_end(layer, addresses: list[str], reason: str) -> None:
    """Tell each socket that its session ended: it closes with 4000."""
    for address in addresses:
        await send_to_socket(layer, address, protocol.session_end_event(reason))


# This process's fan-out registry, for the running event loop.
fanout = per_loop(Fanout)
