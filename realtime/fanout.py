"""Per-process fan-out: one layer message per process per group, delivered here to this process's sockets.

With the stock Channels pattern every socket joins its groups on the channel
layer, so a broadcast to a room of 1,000 sockets is 1,000 layer messages (on
RedisChannelLayer: 1,000 Redis list pushes and 1,000 blocking pops), each
decoded and dispatched by its own consumer task. Here the process joins each
group once, with a channel of its own, and hands each message to its sockets
in a loop: a frame forward is written to every socket at once, anything else
goes to the socket's dispatch.

The few events addressed to one socket (a session that ended) go the same
way: a socket has no channel of its own on the layer, only an address inside
its process's inbox channel (send_to_socket), and the process hands what
arrives there to the socket. A channel per socket cost each idle socket a
receive waiting on the layer: about 6 KiB, a seventh of a socket's memory
(docs/benchmarks.md).

Nothing here is shared state: the groups hold the addresses of this
process's own open sockets (the runtime's registry). The layer stays lossy: a
process that misses a message misses it for its sockets, which resync from
the database when they reconnect.
"""

import asyncio
import itertools
import logging
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from realtime import metrics, protocol

if TYPE_CHECKING:
    from realtime.runtime import Runtime

logger = logging.getLogger(__name__)

# Seconds a socket, or this process, waits for one channel-layer call before it gives up on it.
LAYER_TIMEOUT = 5.0

# A socket's address is its process's inbox channel, this separator and a number of its own. "#" appears in
# no channel name of any layer (channels allows letters, digits, "-", "_", "." and one "!").
ADDRESS_SEPARATOR = "#"
# The key that carries the address in an event sent to the inbox.
ADDRESS_KEY = "__socket__"


class LocalGroup:
    """One group as seen by one process: the addresses of its sockets here, and the channel that receives for them."""

    def __init__(self, name: str, layer, channel: str) -> None:
        self.name = name
        self.layer = layer
        self.channel = channel
        self.members: set[str] = set()
        self.task: asyncio.Task | None = None


class Fanout:
    """The groups that this process's sockets are in, and the process's inbox."""

    def __init__(self, runtime: "Runtime") -> None:
        self.runtime = runtime
        self.groups: dict[str, LocalGroup] = {}
        # Joins and leaves of one group must not interleave around the layer calls.
        self.lock = asyncio.Lock()
        self.refresh_task: asyncio.Task | None = None
        # The process's inbox: events sent to one of its sockets arrive here, with the socket's address.
        self.inbox: str | None = None
        self.inbox_layer = None
        self.inbox_task: asyncio.Task | None = None
        self.socket_numbers = itertools.count(1)

    async def address(self) -> str:
        """A new address for a socket of this process, inside its inbox channel."""
        if self.inbox is None:
            self.inbox_layer = get_channel_layer()
            self.inbox = await self.inbox_layer.new_channel()
        return f"{self.inbox}{ADDRESS_SEPARATOR}{next(self.socket_numbers)}"

    def socket_attached(self) -> None:
        """The first open socket starts the inbox's receive."""
        if self.inbox_task is None and self.inbox is not None:
            self.inbox_task = self.runtime.spawn(self._receive_inbox())

    def socket_detached(self) -> None:
        """The last socket stops the inbox's receive (what arrives later waits on the layer)."""
        if not self.runtime.sockets and self.inbox_task is not None:
            self.inbox_task.cancel()
            self.inbox_task = None

    def stop(self) -> None:
        """Cancel every receive of this process (the runtime is stopping)."""
        for local in self.groups.values():
            self._stop_listening(local)
        for task in (self.inbox_task, self.refresh_task):
            if task is not None:
                task.cancel()
        self.inbox_task = self.refresh_task = None

    async def _receive_inbox(self) -> None:
        async def lost(error: Exception) -> None:
            # Redis went away: every socket here is deaf to what is sent to it.
            metrics.LAYER_ERRORS.labels("receive").inc()
            await self.runtime.layer.lost(f"this process's socket inbox could not receive ({type(error).__name__})")
            await asyncio.sleep(1)

        async def arrived(message: dict[str, Any]) -> None:
            member = self.runtime.sockets.get(message.pop(ADDRESS_KEY, None))
            if member is not None:
                self._handle(member, message)

        # Until socket_detached() or renew() replaces this task.
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

    def _handle(self, member, message: dict[str, Any]) -> None:
        # In a task of its own: a handler may close the socket, which waits out the leave grace.
        self.runtime.spawn(member.dispatch(message), failure="a socket failed to handle an event")

    async def join(self, group: str, address: str) -> None:
        """Add a socket to a group; the first one here subscribes this process to it."""
        async with self.lock:
            local = self.groups.get(group)
            if local is None:
                layer = get_channel_layer()
                channel = await layer.new_channel()
                await layer.group_add(group, channel)
                local = self.groups[group] = LocalGroup(group, layer, channel)
                self._listen(local)
                if self.refresh_task is None:
                    self.refresh_task = self.runtime.spawn(self._refresh())
            else:
                # Renewed on every join: a Redis that restarted (or failed over)
                # has forgotten the membership, and the sockets that reconnect
                # after it must not join a group this process no longer hears.
                await local.layer.group_add(group, local.channel)
            local.members.add(address)

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
                self.inbox_task.cancel()
                self.inbox_task = self.runtime.spawn(self._receive_inbox())

    async def leave(self, group: str, address: str) -> None:
        """Remove a socket from a group; the last one here unsubscribes this process."""
        async with self.lock:
            local = self.groups.get(group)
            if local is None or address not in local.members:
                return
            local.members.discard(address)
            if local.members:
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
        local.task = self.runtime.spawn(self._receive(local, local.channel))

    def _stop_listening(self, local: LocalGroup) -> None:
        """Cancel the group's receive without waiting for it.

        A receive cancelled while Redis restarts can take its time to finish
        (seen: minutes, inside the layer's connection handling); waited for
        under the lock, it held every join of this process, so every socket
        that connected here was refused.
        """
        task, local.task = local.task, None
        if task is not None:
            task.cancel()

    async def _receive(self, local: LocalGroup, channel: str) -> None:
        async def failed(error: Exception) -> None:
            # Redis went away: the inbox's receive fails too and the layer
            # health closes the sockets with 4503; clients resync when they reconnect.
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
        sockets = self.runtime.sockets
        members = [sockets[address] for address in list(local.members) if address in sockets]
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


async def send_to_socket(address: str, event: dict[str, Any]) -> None:
    """Send an event to one socket, on whichever process holds it (through that process's inbox)."""
    inbox, separator, _ = address.partition(ADDRESS_SEPARATOR)
    if not separator:
        raise ValueError(f"not a socket address: {address!r}")
    await get_channel_layer().send(inbox, {**event, ADDRESS_KEY: address})


async def sockets_end(addresses: list[str], reason: str) -> int:
    """Tell each socket that its session ended: it closes with 4000. Returns how many were told."""
    for address in addresses:
        await send_to_socket(address, protocol.session_end_event(reason))
    return len(addresses)


def sockets_end_sync(addresses: list[str], reason: str) -> int:
    """sockets_end() for sync code (views, signals, admin)."""
    if not addresses or get_channel_layer() is None:
        return 0
    return async_to_sync(sockets_end)(addresses, reason)
