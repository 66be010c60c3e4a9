"""Per-process fan-out: one layer message per process per group, delivered here to this process's sockets.

With the stock Channels pattern every socket joins its groups on the channel
layer, so a broadcast to a room of 1,000 sockets is 1,000 layer messages (on
RedisChannelLayer: 1,000 Redis list pushes and 1,000 blocking pops), each
decoded and dispatched by its own consumer task. Here each process has one
channel, its inbox, and joins each group its sockets are in once, with that
inbox. A broadcast names its group in the event, so the one receive of the
inbox hands each message to the process's sockets in that group: a frame
forward is written to every one of them at once, anything else goes to each
socket's dispatch. A group costs a process a membership, not a receive, so
small groups (one per user) are as cheap as big ones (a room).

The few events addressed to one socket (a session that ended) go the same
way: a socket has no channel of its own on the layer, only an address inside
its process's inbox channel (send_to_socket). A channel per socket cost each
idle socket a receive waiting on the layer: about 6 KiB, a seventh of a
socket's memory (docs/benchmarks.md).

Nothing here is shared state: the groups hold the addresses of this
process's own open sockets (the runtime's registry). The layer stays lossy: a
process that misses a message misses it for its sockets, which resync from
the database when they reconnect.

A room's capacity is felt here too. A broadcast that this process sends to a
group its own sockets are in comes back through its inbox, so the process
counts its broadcasts of each group that it has not yet written to its
sockets (Fanout.backlog). That is where a room's backlog builds up when its
senders outrun its fan-out: in the process's inbox on the layer (Daphne's
and Twisted's buffers stayed empty in the throughput benchmark, since every
frame is written at once), where past CHANNEL_CAPACITY the layer drops what
is sent. A sender asks Fanout.behind() before a new message and is refused
while the group's backlog is over FANOUT_BACKLOG_LIMIT frames, so delivery
latency stays bounded instead of the inbox growing.
"""

import asyncio
import itertools
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from realtime import metrics, protocol
from realtime.batch import Batch

if TYPE_CHECKING:
    from realtime.runtime import Runtime

logger = logging.getLogger(__name__)

# Seconds a socket, or this process, waits for one channel-layer call before it gives up on it.
LAYER_TIMEOUT = 5.0

# A socket's address is its process's inbox channel, this separator and a number of its own. "#" appears in
# no channel name of any layer (channels allows letters, digits, "-", "_", "." and one "!").
ADDRESS_SEPARATOR = "#"
# The key that carries the address in an event sent to one socket through its inbox.
ADDRESS_KEY = "__socket__"
# The key that names the group of a broadcast (realtime.protocol.forward_event).
GROUP_KEY = "group"
# deliver_each() yields to the event loop after writing this many frames.
DELIVER_EACH_SLICE = 100
# The key that carries, in a broadcast this process counts, its inbox and the broadcast's number.
ORIGIN_KEY = "origin"
# A counted broadcast not back after this many seconds was lost by the layer (a full channel drops group
# messages without an error): it no longer counts, so a lost one cannot hold a room's senders for good.
UNHEARD_GIVEN_UP = 2 * LAYER_TIMEOUT
# An inbox of a room's group holding this share of its capacity refuses new messages to the room: past the
# capacity, channels-redis's group_send drops what goes to it, for every socket of that process.
INBOX_BEHIND_SHARE = 0.5
# How long one reading of a room's inboxes stands (a reading is one round trip per Redis host).
INBOX_CHECK_INTERVAL = 0.25
# An inbox whose oldest message has waited this long is nobody's (its process died; its membership lasts until
# the group expiry): it refuses nothing, or one crashed process would keep a busy room refusing for a day.
INBOX_GONE_AFTER = UNHEARD_GIVEN_UP


class Fanout:
    """The groups that this process's sockets are in, and the process's inbox."""

    def __init__(self, runtime: "Runtime") -> None:
        self.runtime = runtime
        # group -> the addresses of this process's sockets in it.
        self.groups: dict[str, set[str]] = {}
        # Joins and leaves of one group must not interleave around the layer calls; other groups' may
        # (a group per user: one lock for all made every handshake of a storm wait for every other).
        self.locks: dict[str, asyncio.Lock] = {}
        # group -> loop time of the process's last group_add for it, and the renewal in flight.
        self.renewed: dict[str, float] = {}
        self.renewing: dict[str, asyncio.Task] = {}
        self.refresh_task: asyncio.Task | None = None
        # The process's inbox: every group message and every event sent to one of its sockets arrive here.
        self.inbox: str | None = None
        self.layer = None
        self.inbox_task: asyncio.Task | None = None
        self.socket_numbers = itertools.count(1)
        # The groups that sockets join at one moment are added in one round: a storm of new users' groups
        # made each handshake a Redis call of its own, and each call in flight a connection of its own.
        self.group_adds: Batch[str, None] = Batch(runtime, self._group_add_round, name="group joins")
        # group -> (number, loop time) of this process's broadcasts to it not yet written to its sockets here.
        self.unheard: dict[str, deque[tuple[int, float]]] = {}
        # group -> (loop time, whether an inbox in it was behind) of the last reading of its inboxes.
        self.inbox_checks: dict[str, tuple[float, bool]] = {}
        self.broadcast_numbers = itertools.count(1)

    async def address(self) -> str:
        """A new address for a socket of this process, inside its inbox channel."""
        if self.inbox is None:
            self.layer = get_channel_layer()
            self.inbox = await self.layer.new_channel()
        return f"{self.inbox}{ADDRESS_SEPARATOR}{next(self.socket_numbers)}"

    def socket_attached(self) -> None:
        """The first open socket starts the inbox's receive."""
        if self.inbox_task is None and self.inbox is not None:
            self.inbox_task = self.runtime.spawn(self._receive_inbox(self.inbox))

    def socket_detached(self) -> None:
        """The last socket stops the inbox's receive (what arrives later waits on the layer)."""
        if not self.runtime.sockets and self.inbox_task is not None:
            self.inbox_task.cancel()
            self.inbox_task = None

    def stop(self) -> None:
        """Cancel every receive of this process (the runtime is stopping)."""
        for task in (self.inbox_task, self.refresh_task):
            if task is not None:
                task.cancel()
        self.inbox_task = self.refresh_task = None

    async def _receive_inbox(self, inbox: str) -> None:
        """Receive on the inbox until socket_detached() or renew() replaces this task.

        Checked on every turn: a receive cancelled inside redis-py can end in a
        ConnectionError instead of CancelledError, and a loop that kept going
        held the event loop's shutdown for good.
        """
        this = asyncio.current_task()
        while self.inbox_task is this and not this.cancelling():
            try:
                message = await self.layer.receive(inbox)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if self.inbox_task is not this or this.cancelling():
                    return
                # Redis went away: every socket here is deaf to what is sent to it.
                metrics.LAYER_ERRORS.labels("receive").inc()
                await self.runtime.layer.lost(f"this process's inbox could not receive ({type(error).__name__})")
                await asyncio.sleep(1)
                continue
            if message.get("type") == protocol.EVENT_FORWARD_EACH:
                await self.deliver_each(message["frames"])
                continue
            address = message.pop(ADDRESS_KEY, None)
            if address is None:
                await self.deliver(message.get(GROUP_KEY), message)
                continue
            member = self.runtime.sockets.get(address)
            if member is not None:
                self._handle(member, message)

    def _handle(self, member, message: dict[str, Any]) -> None:
        # In a task of its own: a handler may close the socket, which waits out the leave grace.
        self.runtime.spawn(member.dispatch(message), failure="a socket failed to handle an event")

    async def deliver(self, group: str, message: dict[str, Any]) -> None:
        """Hand a group's message to this process's sockets in that group."""
        addresses = self.groups.get(group)
        if not addresses:
            return
        sockets = self.runtime.sockets
        members = [sockets[address] for address in list(addresses) if address in sockets]
        if message.get("type") == protocol.EVENT_FORWARD:
            for member in members:
                try:
                    await member.frame_forward(message)
                except Exception:
                    logger.debug("a forward to %s failed", member.channel_name, exc_info=True)
        else:
            for member in members:
                self._handle(member, message)
        origin = message.get(ORIGIN_KEY)
        if origin and origin[0] == self.inbox:
            self._heard(group, origin[1])

    def counted(self, group: str, event: dict[str, Any]) -> None:
        """Mark a broadcast that is about to go to a group, to count it until it comes back to this process.

        Only for a group this process has sockets in: the others' broadcasts
        never come back here.
        """
        if self.inbox is None or not self.groups.get(group):
            return
        number = next(self.broadcast_numbers)
        event[ORIGIN_KEY] = [self.inbox, number]
        self.unheard.setdefault(group, deque()).append((number, self.runtime.loop.time()))

    def _heard(self, group: str, number: int) -> None:
        # A channel keeps the order its messages were sent in: what was counted before this one and is still
        # waiting was lost (or, sent at the same moment by another task, overtaken: it is not counted twice).
        waiting = self.unheard.get(group)
        while waiting and waiting[0][0] <= number:
            waiting.popleft()
        if not waiting:
            self.unheard.pop(group, None)

    def backlog(self, group: str) -> int:
        """The frames this process still has to write to its sockets for its own broadcasts to a group."""
        waiting = self.unheard.get(group)
        if not waiting:
            return 0
        given_up = self.runtime.loop.time() - UNHEARD_GIVEN_UP
        while waiting and waiting[0][1] <= given_up:
            waiting.popleft()
        return len(waiting) * len(self.groups.get(group, ()))

    def behind(self, group: str) -> bool:
        """True while a group's fan-out here is FANOUT_BACKLOG_LIMIT frames or more behind: refuse new messages."""
        limit = settings.FANOUT_BACKLOG_LIMIT
        return limit > 0 and self.backlog(group) >= limit

    async def inboxes_behind(self, group: str) -> bool:
        """True while an inbox in the group, this process's or another's, is INBOX_BEHIND_SHARE of its capacity deep.

        behind() counts this process's own broadcasts until they come back.
        A process that falls behind elsewhere fills its inbox, and what goes
        past the inbox's capacity is dropped for all its sockets; senders here
        would not feel it. Read at most once per INBOX_CHECK_INTERVAL per group
        (callers meanwhile get the last answer); a failed read refuses nothing.
        """
        now = self.runtime.loop.time()
        last = self.inbox_checks.get(group)
        if last is not None and now - last[0] < INBOX_CHECK_INTERVAL:
            return last[1]
        self.inbox_checks[group] = (now, last[1] if last is not None else False)
        try:
            behind = await asyncio.wait_for(
                inboxes_deep(self.layer, group, INBOX_BEHIND_SHARE, gone_after=INBOX_GONE_AFTER), LAYER_TIMEOUT
            )
        except Exception:
            logger.debug("could not read the inboxes of %s", group, exc_info=True)
            behind = False
        if group in self.groups:
            self.inbox_checks[group] = (self.runtime.loop.time(), behind)
        return behind

    def _lock(self, group: str) -> asyncio.Lock:
        lock = self.locks.get(group)
        if lock is None:
            lock = self.locks[group] = asyncio.Lock()
        return lock

    async def deliver_each(self, frames: dict[str, str]) -> None:
        """Write each of this process's sockets named in frames its own frame (a socket that closed is skipped)."""
        sockets = self.runtime.sockets
        for n, (address, text) in enumerate(frames.items(), 1):
            member = sockets.get(address)
            if member is not None:
                try:
                    await member.frame_forward({"type": protocol.EVENT_FORWARD, "text": text, "skip": None})
                except Exception:
                    logger.debug("a forward to %s failed", address, exc_info=True)
            if n % DELIVER_EACH_SLICE == 0:
                # Writing a thousand frames holds the loop for tens of milliseconds: let other sockets' work in.
                await asyncio.sleep(0)

    async def join(self, group: str, address: str) -> None:
        """Add a socket to a group; the process's membership is renewed by joins, at most once a second.

        Renewed, not only made by the first socket: a Redis that restarted (or
        failed over) has forgotten the membership, and the sockets that
        reconnect after it must not join a group this process no longer hears.
        Once a second is enough for that (the layer check closes every socket
        of a process whose Redis restarted, and renews its groups first), and
        spares a storm of handshakes one Redis call each.

        A group the process is in already takes no lock: the sockets that join
        it in the same second share one renewal (a room's storm of handshakes
        queued on the group's lock behind each renewal's Redis call, past the
        layer timeout). Only a group's first join and last leave are ordered by
        its lock.
        """
        while True:
            members = self.groups.get(group)
            if members is not None:
                if self.runtime.loop.time() - self.renewed.get(group, float("-inf")) < 1.0:
                    members.add(address)
                    return
                await self._renewal(group)
                continue  # the group may have emptied meanwhile (its last socket left): look again
            async with self._lock(group):
                if group in self.groups:
                    continue  # made while this join waited for the lock
                await self.group_adds.submit(group)
                self.renewed[group] = self.runtime.loop.time()
                self.groups[group] = {address}
                if self.refresh_task is None:
                    self.refresh_task = self.runtime.spawn(self._refresh())
                return

    async def _renewal(self, group: str) -> None:
        """Renew the process's membership of a group it is in: one group_add for every socket that asks meanwhile."""
        task = self.renewing.get(group)
        if task is None:

            async def renew() -> None:
                try:
                    await self.group_adds.submit(group)
                    self.renewed[group] = self.runtime.loop.time()
                finally:
                    del self.renewing[group]

            task = self.renewing[group] = self.runtime.spawn(renew())
        await asyncio.shield(task)

    async def _group_add_round(self, groups: list[str]) -> list[None | Exception]:
        """Add this process's inbox to each group, in one pipeline per Redis host with the Redis layer."""
        inbox, unique = self.inbox, list(dict.fromkeys(groups))
        try:
            await asyncio.wait_for(groups_add(self.layer, unique, inbox), LAYER_TIMEOUT)
        except Exception as error:
            return [error] * len(groups)
        return [None] * len(groups)

    async def leave(self, group: str, address: str) -> None:
        """Remove a socket from a group; the last one here ends the process's membership."""
        lock = self._lock(group)
        async with lock:
            addresses = self.groups.get(group)
            if addresses is None or address not in addresses:
                return
            addresses.discard(address)
            if addresses:
                return
            del self.groups[group]
            self.renewed.pop(group, None)
            self.unheard.pop(group, None)
            self.inbox_checks.pop(group, None)
            if not self.groups and self.refresh_task is not None:
                self.refresh_task.cancel()
                self.refresh_task = None
            try:
                await asyncio.wait_for(self.layer.group_discard(group, self.inbox), LAYER_TIMEOUT)
            except Exception:
                # Membership expires on its own (group_expiry); nothing is delivered here any more.
                logger.warning("could not leave group %s on the channel layer", group, exc_info=True)
        # The group is gone: its lock goes too, unless a join is already waiting on it (a group per user
        # would otherwise leave a lock behind for every user who ever came).
        if group not in self.groups and not lock.locked() and not getattr(lock, "_waiters", None):
            if self.locks.get(group) is lock:
                del self.locks[group]

    async def renew(self) -> None:
        """After Redis restarted: receive on a fresh inbox and join every group again with it.

        The new Redis has forgotten every membership, and a receive that was
        waiting on the old one may never wake. The sockets of this process are
        closed right after (4503); those that reconnect get addresses in the
        new inbox and must find its groups live.
        """
        old_inbox, self.inbox = self.inbox, await self.layer.new_channel()
        # What was sent to the old inbox never comes back.
        self.unheard.clear()
        if self.inbox_task is not None:
            self.inbox_task.cancel()
            self.inbox_task = self.runtime.spawn(self._receive_inbox(self.inbox))
        for group in await self._add_all("could not join %d groups again after a restart (%s)"):
            try:
                # A replica promoted by Sentinel still has the old membership: each message would come twice.
                await asyncio.wait_for(self.layer.group_discard(group, old_inbox), LAYER_TIMEOUT)
            except Exception:
                logger.warning("could not leave group %s with the old inbox", group, exc_info=True)

    async def _refresh(self) -> None:
        """Renew this process's group memberships before the layer's group_expiry drops them."""
        interval = max(1.0, min(3600.0, settings.CHANNEL_GROUP_EXPIRY / 2))
        while True:
            await asyncio.sleep(interval)
            await self._add_all("could not renew %d groups (%s)")

    async def _add_all(self, failure: str) -> list[str]:
        """Add the inbox to every group this process is in, through the joins' rounds; the groups that took it.

        With a group per user a process is in thousands of groups: one
        pipeline per round of them, not a round trip each.
        """
        groups = list(self.groups)
        results = await asyncio.gather(*(self.group_adds.submit(group) for group in groups), return_exceptions=True)
        now, added, failed = self.runtime.loop.time(), [], []
        for group, result in zip(groups, results):
            if isinstance(result, BaseException):
                failed.append(group)
            else:
                added.append(group)
                self.renewed[group] = now
        if failed:
            logger.warning(failure, len(failed), ", ".join(failed[:5]))
        return added


async def groups_add(layer, groups: list[str], channel: str) -> None:
    """layer.group_add(group, channel) for each group: with channels-redis' RedisChannelLayer, one round trip.

    What RedisChannelLayer.group_add does (ZADD of the channel with the time,
    then EXPIRE by group_expiry), pipelined per shard; any other layer gets
    its own group_add one group after the other.
    """
    from channels_redis.core import RedisChannelLayer

    if not isinstance(layer, RedisChannelLayer):
        for group in groups:
            await layer.group_add(group, channel)
        return
    by_shard: dict[int, list[str]] = {}
    for group in groups:
        assert layer.require_valid_group_name(group), "Group name not valid"
        by_shard.setdefault(layer.consistent_hash(group), []).append(group)
    assert layer.require_valid_channel_name(channel), "Channel name not valid"
    for shard, shard_groups in by_shard.items():
        async with layer.connection(shard).pipeline(transaction=False) as pipe:
            now = time.time()
            for group in shard_groups:
                key = layer._group_key(group)
                pipe.zadd(key, {channel: now})
                pipe.expire(key, layer.group_expiry)
            await pipe.execute()


async def inboxes_deep(layer, group: str, share: float, *, gone_after: float) -> bool:
    """Whether a channel of the group holds `share` of its capacity or more, not yet received (RedisChannelLayer).

    The keys are channels-redis's own (a process's channels share the key of
    their non-local name, and a message's score is when it was sent): the
    group's members, then one pipeline per shard of each key's size and oldest
    message. A channel whose oldest message is `gone_after` seconds old is
    taken for one nobody receives any more, and counts for nothing. Any other
    layer says False.
    """
    from channels_redis.core import RedisChannelLayer

    if not isinstance(layer, RedisChannelLayer):
        return False
    members = await layer.connection(layer.consistent_hash(group)).zrange(layer._group_key(group), 0, -1)
    by_shard: dict[int, dict[str, int]] = {}
    for member in members:
        channel = member.decode()
        name = layer.non_local_name(channel) if "!" in channel else channel
        by_shard.setdefault(layer.consistent_hash(name), {})[layer.prefix + name] = layer.get_capacity(channel)
    for shard, capacities in by_shard.items():
        async with layer.connection(shard).pipeline(transaction=False) as pipe:
            for key in capacities:
                pipe.zcard(key)
                pipe.zrange(key, 0, 0, withscores=True)
            answers = await pipe.execute()
        now = time.time()
        for (depth, oldest), capacity in zip(zip(answers[::2], answers[1::2]), capacities.values()):
            if depth >= capacity * share and oldest and now - oldest[0][1] < gone_after:
                return True
    return False


async def send_to_socket(address: str, event: dict[str, Any]) -> None:
    """Send an event to one socket, on whichever process holds it (through that process's inbox)."""
    inbox, separator, _ = address.partition(ADDRESS_SEPARATOR)
    if not separator:
        raise ValueError(f"not a socket address: {address!r}")
    await get_channel_layer().send(inbox, {**event, ADDRESS_KEY: address})


async def send_to_sockets(frames: dict[str, str], *, label: str) -> bool:
    """Send each socket its own serialized frame, on whichever process holds it: one layer message per process.

    For frames that differ per socket and go to many at once (a count per
    reader): a message per socket would cost each one a layer round trip. True
    when the layer took every message; a failure is counted and logged, not
    raised, and not retried (the caller knows what to send again).
    """
    by_inbox: dict[str, dict[str, str]] = {}
    for address, text in frames.items():
        inbox, separator, _ = address.partition(ADDRESS_SEPARATOR)
        if not separator:
            raise ValueError(f"not a socket address: {address!r}")
        by_inbox.setdefault(inbox, {})[address] = text
    layer = get_channel_layer()
    delivered = True
    for inbox, batch in by_inbox.items():
        try:
            await asyncio.wait_for(layer.send(inbox, protocol.forward_each_event(batch)), LAYER_TIMEOUT)
        except Exception as error:
            metrics.LAYER_ERRORS.labels(label).inc()
            logger.warning("%s to %d sockets of %s failed (%s)", label, len(batch), inbox, type(error).__name__)
            delivered = False
    return delivered


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
