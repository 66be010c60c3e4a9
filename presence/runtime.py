"""The per-process side of presence: who this process is, its heartbeat, and its outbox.

Nothing here is shared state: the database holds presence, and this module
only keeps what belongs to one process (its identity, how many sockets it
holds, transitions waiting for the next coalesced diff).
"""

import asyncio
import logging
import os
import socket
import time
import uuid
import weakref
from collections.abc import Coroutine
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from presence import metrics, protocol
from presence.fanout import LAYER_TIMEOUT, fanout, sockets_end
from presence.loops import keep, per_loop
from presence.selectors import presence_online_count, presence_online_users, presence_recently_seen
from presence.services import (
    Join,
    Leave,
    StateChange,
    Transition,
    connection_close,
    connection_heartbeat,
    connection_sessions_ended,
    presence_settle,
    presence_sweep,
)

logger = logging.getLogger(__name__)

# Seconds the heartbeat waits for Redis to say who it is.
LAYER_CHECK_TIMEOUT = 2.0
# When a broadcast fails, it is sent again after these pauses (seconds); a
# presence diff keeps trying at the last one.
BROADCAST_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)

SERVER_ID = f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class PresenceHub:
    """Heartbeat, sweep and coalesced diffs for the sockets of one process (one event loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # This process's own open sockets: counted by the heartbeat, closed when the layer forgot them.
        self.consumers: "weakref.WeakSet" = weakref.WeakSet()
        self.layer_epoch: tuple | None = None
        self.layer_failures = 0
        self.pending: dict[str, Transition] = {}
        # Kept apart from joins and leaves: a join and an away in one window are both news.
        self.pending_states: dict[str, str] = {}
        self.last_flush = float("-inf")
        # Diffs in a row that could not be published; their transitions wait for the next.
        self.flush_failures = 0
        self.flush_task: asyncio.Task | None = None
        self.flush_lock = asyncio.Lock()
        self.heartbeat_task: asyncio.Task | None = None
        # Broadcasts being sent again after a layer failure (kept so they are not collected).
        self.resends: set[asyncio.Task] = set()
        # Closed sockets still being forgotten (finish()), kept for the same reason.
        self.finishing: set[asyncio.Task] = set()
        self.session_check_task: asyncio.Task | None = None
        # Sockets that closed while the database was unreachable: their rows
        # would be refreshed by the heartbeat for ever, so it retries them.
        self.unclosed: set[str] = set()
        # After an outage, skip sweeping until the other processes have had a
        # heartbeat interval to refresh their own rows (they were cut off too).
        self.beats_since_failure = 2
        # The latest snapshot frame, serialized, and when its query started (time.monotonic()).
        self.snapshot: tuple[float, str] | None = None
        self.snapshot_task: asyncio.Task | None = None

    async def snapshot_text(self, *, after: float) -> str:
        """A snapshot frame read after `after`, shared by every socket waiting for one.

        A socket registered at `after` is in any snapshot read later, and any
        change after the read reaches it as a diff (it joined the group
        first), so one read serves every socket registered before it started:
        a login storm costs a few snapshot queries, not one per socket.
        """
        while True:
            if self.snapshot is not None and self.snapshot[0] >= after:
                return self.snapshot[1]
            if self.snapshot_task is None:
                self.snapshot_task = self.loop.create_task(self._read_snapshot())
            # The read in flight may have started before `after`: then wait for the next one.
            await asyncio.shield(self.snapshot_task)

    async def _read_snapshot(self) -> None:
        def read() -> tuple[float, list, list]:
            started = time.monotonic()
            return started, presence_online_users(), presence_recently_seen()

        try:
            started, users, recent = await database_sync_to_async(read)()
            self.snapshot = (started, protocol.dumps(protocol.snapshot_frame(users, recent)))
        finally:
            self.snapshot_task = None

    async def finish(self, work: Coroutine[Any, Any, None]) -> None:
        """Run work to its end even if the caller is cancelled; the caller waits for it, and its failure, otherwise."""
        task = keep(self.finishing, self.loop.create_task(work))
        # Unlike awaiting the task, asyncio.wait leaves it running when the caller is cancelled;
        # a failure nobody waits for any more is logged by asyncio ("exception was never retrieved").
        await asyncio.wait({task})
        task.result()

    def close_later(self, channel_name: str) -> None:
        """Remember a socket whose row could not be deleted; the heartbeat deletes it."""
        self.unclosed.add(channel_name)
        if self.heartbeat_task is None:
            self.heartbeat_task = self.loop.create_task(self._heartbeat())

    @property
    def sockets(self) -> int:
        return len(self.consumers)

    def socket_opened(self, consumer) -> None:
        self.consumers.add(consumer)
        if self.heartbeat_task is None:
            self.heartbeat_task = self.loop.create_task(self._heartbeat())
        if self.session_check_task is None:
            self.session_check_task = self.loop.create_task(self._session_check())

    def socket_closed(self, consumer) -> None:
        self.consumers.discard(consumer)

    def publish(self, transitions: list[Transition | StateChange]) -> None:
        """Queue transitions for the next diff; a burst within the window becomes one frame."""
        for transition in transitions:
            if isinstance(transition, StateChange):
                self.pending_states[transition.username] = transition.state
            else:
                # A user appears once per diff, in their latest state; an
                # away/online change queued before this join or leave is older.
                self.pending[transition.username] = transition
                self.pending_states.pop(transition.username, None)
        if (self.pending or self.pending_states) and self.flush_task is None:
            self.flush_task = self.loop.create_task(self._flush())

    async def group_send(self, group: str, event: dict, *, label: str) -> bool:
        """Send a stored thing to a group; if the layer fails, keep sending it in the background.

        Sockets that reconnected while the layer was failing have already
        resumed from the database past what was stored before they came back,
        so what is stored after that reaches them only by broadcast: a lost one
        would be a gap until their next reconnect. Receivers drop repeats by id.
        """
        if await self.try_group_send(group, event, label=label):
            return True
        keep(self.resends, self.loop.create_task(self._resend(group, event, label)))
        return False

    async def try_group_send(self, group: str, event: dict, *, label: str) -> bool:
        """Send to a group once, bounded by LAYER_TIMEOUT; a failure is counted and logged, not raised."""
        try:
            await asyncio.wait_for(get_channel_layer().group_send(group, event), LAYER_TIMEOUT)
        except Exception as error:
            metrics.LAYER_ERRORS.labels(label).inc()
            logger.warning("%s broadcast to %s failed (%s)", label, group, type(error).__name__)
            return False
        return True

    async def _resend(self, group: str, event: dict, label: str) -> None:
        for delay in BROADCAST_RETRY_DELAYS:
            await asyncio.sleep(delay)
            if await self.try_group_send(group, event, label=label):
                return
        logger.error("%s broadcast to %s given up after %d tries", label, group, len(BROADCAST_RETRY_DELAYS) + 1)

    async def _flush(self) -> None:
        async with self.flush_lock:
            # The window runs from when the previous diff was handed to the layer,
            # so a slow count query cannot bunch two diffs together.
            delay = self.last_flush + settings.PRESENCE_COALESCE_WINDOW - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.flush_task = None
            pending, self.pending = self.pending, {}
            pending_states, self.pending_states = self.pending_states, {}
            if not pending and not pending_states:
                return
            joins = [
                {"username": t.username, "since": protocol.iso(t.since)}
                for t in pending.values()
                if isinstance(t, Join)
            ]
            leaves = [
                {"username": t.username, "last_seen": protocol.iso(t.last_seen)}
                for t in pending.values()
                if isinstance(t, Leave)
            ]
            states = [
                {"username": username, "state": state}
                for username, state in pending_states.items()
                if not isinstance(pending.get(username), Leave)
            ]
            try:
                count = await database_sync_to_async(presence_online_count)()
            except Exception as error:
                logger.warning("presence diff could not count who is online (%s)", type(error).__name__)
                published = False
            else:
                # Bounded, or a hung Redis would hold the lock and every later diff.
                frame = protocol.diff_frame(joins, leaves, count, states)
                event = protocol.forward_event(frame)
                published = await self.try_group_send(protocol.PRESENCE_GROUP, event, label="presence_diff")
            if not published:
                self._flush_again(pending, pending_states)
                return
            self.flush_failures = 0
            self.last_flush = self.loop.time()

    def _flush_again(self, pending: dict, pending_states: dict) -> None:
        """Put back the transitions of a diff that was not published, and send them with the next diff.

        Watchers that had already resumed from a snapshot would otherwise miss
        them until they reconnect. A newer transition of the same user wins, so
        a watcher never sees a user's changes out of order; one that did get the
        failed diff (it timed out after all) sees the same states again.
        """
        for username, state in pending_states.items():
            # Not behind a newer transition or state, nor after a leave of the same diff.
            if username in self.pending or username in self.pending_states or isinstance(pending.get(username), Leave):
                continue
            self.pending_states[username] = state
        for username, transition in pending.items():
            self.pending.setdefault(username, transition)
        delay = BROADCAST_RETRY_DELAYS[min(self.flush_failures, len(BROADCAST_RETRY_DELAYS) - 1)]
        self.flush_failures += 1
        # The next flush waits out the pause instead of the coalescing window.
        self.last_flush = self.loop.time() + delay - settings.PRESENCE_COALESCE_WINDOW
        if self.flush_task is None:
            self.flush_task = self.loop.create_task(self._flush())

    async def _heartbeat(self) -> None:
        try:
            while self.sockets > 0 or self.unclosed:
                await self._check_layer()
                try:
                    await database_sync_to_async(connection_heartbeat)(server=SERVER_ID)
                    await self._close_unclosed()
                    self.beats_since_failure += 1
                    if self.beats_since_failure >= 2:
                        removed, leaves = await database_sync_to_async(presence_sweep)()
                        metrics.SWEEP_RUNS.inc()
                        metrics.STALE_REMOVED.inc(removed)
                        if removed or leaves:
                            logger.info(
                                "presence sweep removed %d stale sockets, %d users went offline", removed, len(leaves)
                            )
                        self.publish(leaves)
                except Exception:
                    self.beats_since_failure = 0
                    logger.exception("presence heartbeat failed; trying again next interval")
                await asyncio.sleep(settings.PRESENCE_HEARTBEAT_INTERVAL)
        finally:
            self.heartbeat_task = None

    async def _session_check(self) -> None:
        # A session that expires fires no signal, and one deleted by an admin or
        # `clearsessions` fires none either: look for them, one query per round.
        try:
            while self.sockets > 0:
                await asyncio.sleep(settings.SOCKET_SESSION_CHECK_INTERVAL)
                try:
                    ended = await database_sync_to_async(connection_sessions_ended)(server=SERVER_ID)
                    if ended:
                        logger.info("closing %d sockets whose session ended or whose user is inactive", len(ended))
                        await sockets_end(get_channel_layer(), ended, "session ended or account deactivated")
                except Exception:
                    logger.exception("session check failed; trying again next interval")
        finally:
            self.session_check_task = None

    async def _check_layer(self) -> None:
        """Close every socket of this process when Redis restarted (or failed over) under it.

        A restarted Redis has forgotten every group: a socket whose receive
        survived the restart (redis-py reconnects on its own) would stay open
        and hear nothing. Closing it with 4503 makes the client reconnect,
        join its groups again and resync from the database.
        """
        epoch = await layer_epoch()
        if epoch is None:
            # Down or hung: a socket's receive may wait for redis-py's timeouts
            # and retries, far longer than a client should sit deaf. Two checks
            # in a row is the bound (at most two heartbeats and 2 s).
            self.layer_failures += 1
            if self.layer_failures == 2:
                await self._close_all("the channel layer does not answer", "unreachable")
            return
        self.layer_failures = 0
        previous, self.layer_epoch = self.layer_epoch, epoch
        if previous is None or previous == epoch:
            return
        if settings.CHANNEL_FANOUT == "process":
            await fanout().renew()
        await self._close_all("the channel layer's Redis restarted", "restarted")

    async def _close_all(self, reason: str, label: str) -> None:
        """Close every socket of this process with 4503, so that each client reconnects and resyncs."""
        consumers = list(self.consumers)
        metrics.LAYER_ERRORS.labels(label).inc()
        logger.warning("%s; closing %d sockets so that they resync", reason, len(consumers))
        for consumer in consumers:
            try:
                await consumer.close(code=protocol.CLOSE_TRY_AGAIN_LATER)
            except Exception:
                logger.exception("a socket could not be closed after the layer restarted")

    async def _close_unclosed(self) -> None:
        for channel_name in list(self.unclosed):
            user_id = await database_sync_to_async(connection_close)(channel_name=channel_name)
            self.unclosed.discard(channel_name)
            if user_id is not None:
                leave = await database_sync_to_async(presence_settle)(user_id=user_id)
                if leave is not None:
                    self.publish([leave])


async def layer_epoch() -> tuple | None:
    """The run ids of the channel layer's Redis servers (they change when one restarts); None if one does not answer."""
    layer = get_channel_layer()
    if layer is None or not hasattr(layer, "ring_size") or not hasattr(layer, "connection"):
        return ()  # the in-memory layer lives and dies with the process: nothing to watch
    try:
        ids = []
        for index in range(layer.ring_size):
            info = await asyncio.wait_for(layer.connection(index).info("server"), LAYER_CHECK_TIMEOUT)
            ids.append(info.get("run_id"))
    except Exception:
        return None  # unreachable now: compared again once it answers
    return tuple(ids)


# This process's hub, for the running event loop.
hub = per_loop(PresenceHub)
