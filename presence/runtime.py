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

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from presence import metrics, protocol
from presence.selectors import presence_online_count, presence_online_users, presence_recently_seen
from presence.services import (
    Join,
    Leave,
    StateChange,
    Transition,
    connection_heartbeat,
    connection_sessions_ended,
    presence_sweep,
)

logger = logging.getLogger(__name__)

SERVER_ID = f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class PresenceHub:
    """Heartbeat, sweep and coalesced diffs for the sockets of one process (one event loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sockets = 0
        self.pending: dict[str, Transition] = {}
        # Kept apart from joins and leaves: a join and an away in one window are both news.
        self.pending_states: dict[str, str] = {}
        self.last_flush = float("-inf")
        self.flush_task: asyncio.Task | None = None
        self.flush_lock = asyncio.Lock()
        self.heartbeat_task: asyncio.Task | None = None
        self.session_check_task: asyncio.Task | None = None
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

    def socket_opened(self) -> None:
        self.sockets += 1
        if self.heartbeat_task is None:
            self.heartbeat_task = self.loop.create_task(self._heartbeat())
        if self.session_check_task is None:
            self.session_check_task = self.loop.create_task(self._session_check())

    def socket_closed(self) -> None:
        self.sockets = max(0, self.sockets - 1)

    def publish(self, transitions: list[Transition | StateChange]) -> None:
        """Queue transitions for the next diff; a burst within the window becomes one frame."""
        for transition in transitions:
            if isinstance(transition, StateChange):
                self.pending_states[transition.username] = transition.state
            else:
                # A user appears once per diff, in their latest state.
                self.pending[transition.username] = transition
        if (self.pending or self.pending_states) and self.flush_task is None:
            self.flush_task = self.loop.create_task(self._flush())

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
            joins = [{"username": t.username, "since": protocol.iso(t.since)} for t in pending.values() if isinstance(t, Join)]
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
                frame = protocol.diff_frame(joins, leaves, count, states)
                await get_channel_layer().group_send(protocol.PRESENCE_GROUP, protocol.forward_event(frame))
            except Exception:
                metrics.LAYER_ERRORS.labels("presence_diff").inc()
                # Watchers resync from a snapshot when they reconnect; the
                # transitions themselves are already in the database.
                logger.exception("presence diff could not be published")
            finally:
                self.last_flush = self.loop.time()

    async def _heartbeat(self) -> None:
        try:
            while self.sockets > 0:
                try:
                    await database_sync_to_async(connection_heartbeat)(server=SERVER_ID)
                    removed, leaves = await database_sync_to_async(presence_sweep)()
                    metrics.SWEEP_RUNS.inc()
                    metrics.STALE_REMOVED.inc(removed)
                    if removed or leaves:
                        logger.info("presence sweep removed %d stale sockets, %d users went offline", removed, len(leaves))
                    self.publish(leaves)
                except Exception:
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
                        logger.info("closing %d sockets whose session expired or was deleted", len(ended))
                        layer = get_channel_layer()
                        for channel_name in ended:
                            await layer.send(channel_name, protocol.session_end_event("session expired or deleted"))
                except Exception:
                    logger.exception("session check failed; trying again next interval")
        finally:
            self.session_check_task = None


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, PresenceHub]" = weakref.WeakKeyDictionary()


def hub() -> PresenceHub:
    """This process's hub, for the running event loop."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = PresenceHub(loop)
    return found
