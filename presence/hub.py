"""Presence's per-process work: coalesced diffs, a shared snapshot, the heartbeat, the sweep and the session check.

Nothing here is shared state: the database holds presence; a process keeps
only the transitions waiting for its next diff and the rows it could not
delete yet. The runtime (realtime.runtime) runs the periodic jobs and keeps
every task.
"""

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from presence import metrics, protocol
from presence.selectors import presence_online_count, presence_online_users, presence_recently_seen
from presence.services import (
    Join,
    Leave,
    StateChange,
    StatusUpdate,
    Transition,
    connection_close,
    connection_heartbeat,
    connection_server_close,
    connection_sessions_ended,
    presence_settle,
    presence_status_expire,
    presence_sweep,
)
from realtime.broadcast import broadcast
from realtime.coalesce import Coalescer
from realtime.fanout import sockets_end
from realtime.protocol import dumps, iso
from realtime.runtime import SERVER_ID, Runtime, on_stop, periodic, runtime

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pending:
    """What a diff will say of one user: their latest join or leave, and their latest away/online state."""

    transition: Transition | None = None
    state: StateChange | None = None


def _merge(old: Pending, new: Pending) -> Pending:
    # A join or leave is the user's latest news: an away/online change queued before it is older.
    if new.transition is not None:
        return new
    return replace(old, state=new.state)


class PresenceHub:
    """Presence for the sockets of one process."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.diffs = Coalescer(runtime, self._flush, window=lambda: settings.PRESENCE_COALESCE_WINDOW, merge=_merge)
        # Sockets that closed while the database was unreachable: their rows
        # would be refreshed by the heartbeat for ever, so it retries them.
        self.unclosed: set[str] = set()
        # After an outage, skip sweeping until the other processes have had a
        # heartbeat interval to refresh their own rows (they were cut off too).
        self.beats_since_failure = 2
        # The latest snapshot frame, serialized, and when its query started (time.monotonic()).
        self.snapshot: tuple[float, str] | None = None
        self.snapshot_task: asyncio.Task | None = None

    def publish(self, changes: list[Transition | StateChange]) -> None:
        """Queue changes for the next diff; a burst within the window becomes one frame."""
        for change in changes:
            if isinstance(change, StateChange):
                self.diffs.add(protocol.PRESENCE_GROUP, change.username, Pending(state=change))
            else:
                self.diffs.add(protocol.PRESENCE_GROUP, change.username, Pending(transition=change))

    async def _flush(self, group: str, batch: dict[Any, Pending]) -> bool:
        joins = [
            {"username": p.transition.username, "since": iso(p.transition.since)}
            for p in batch.values()
            if isinstance(p.transition, Join)
        ]
        leaves = [
            {"username": p.transition.username, "last_seen": iso(p.transition.last_seen)}
            for p in batch.values()
            if isinstance(p.transition, Leave)
        ]
        states = [
            {"username": username, "state": p.state.state, "since": iso(p.state.at)}
            for username, p in batch.items()
            if p.state is not None and not isinstance(p.transition, Leave)
        ]
        try:
            count = await database_sync_to_async(presence_online_count)()
        except Exception as error:
            logger.warning("presence diff could not count who is online (%s)", type(error).__name__)
            return False
        # Not retried by broadcast(): the coalescer puts the batch back, and a newer change of a user wins.
        frame = protocol.diff_frame(joins, leaves, count, states)
        return await broadcast(group, frame, label="presence_diff", retry=False)

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
                self.snapshot_task = self.runtime.spawn(self._read_snapshot())
            # The read in flight may have started before `after`: then wait for the next one.
            await asyncio.shield(self.snapshot_task)

    async def _read_snapshot(self) -> None:
        def read() -> tuple[float, list, list]:
            started = time.monotonic()
            return started, presence_online_users(), presence_recently_seen()

        try:
            started, users, recent = await database_sync_to_async(read)()
            self.snapshot = (started, dumps(protocol.snapshot_frame(users, recent)))
        finally:
            self.snapshot_task = None

    async def status_changed(self, update: StatusUpdate, *, user_id: int) -> None:
        """Tell everyone what a status.set changed, in order: the user's other tabs, the watchers, the rooms."""
        from presence.signals import status_changed

        if update.transition is not None:
            self.publish([update.transition])
        # Every tab and device of the user, invisibility included, so that each shows the same.
        own = protocol.status_frame(update.username, update.status, invisible=update.invisible)
        await broadcast(protocol.user_group(user_id), own, label="presence_status")
        shown = update.status_changed or isinstance(update.transition, Join)
        if shown and not update.invisible:
            frame = protocol.status_frame(update.username, update.status)
            await broadcast(protocol.PRESENCE_GROUP, frame, label="presence_status")
        if update.status_changed or update.transition is not None:
            status_changed.send(sender=PresenceHub, user_id=user_id)

    async def statuses_expired(self, cleared: list[tuple[int, str]]) -> None:
        """Announce statuses the heartbeat cleared at their time (status: null)."""
        from presence.signals import status_changed

        for user_id, username in cleared:
            frame = protocol.status_frame(username, None)
            await broadcast(protocol.PRESENCE_GROUP, frame, label="presence_status")
            await broadcast(protocol.user_group(user_id), frame, label="presence_status")
            status_changed.send(sender=PresenceHub, user_id=user_id)

    def close_later(self, channel_name: str) -> None:
        """Remember a socket whose row could not be deleted; the heartbeat deletes it."""
        self.unclosed.add(channel_name)

    async def close_unclosed(self) -> None:
        for channel_name in list(self.unclosed):
            user_id = await database_sync_to_async(connection_close)(channel_name=channel_name)
            self.unclosed.discard(channel_name)
            if user_id is not None:
                leave = await database_sync_to_async(presence_settle)(user_id=user_id)
                if leave is not None:
                    self.publish([leave])


def hub() -> PresenceHub:
    """This process's presence hub."""
    return runtime().local(PresenceHub)


@periodic(interval=lambda: settings.PRESENCE_HEARTBEAT_INTERVAL)
async def heartbeat(runtime: Runtime) -> None:
    """Refresh this process's sockets, retry the rows it could not delete, and sweep dead processes' sockets."""
    presence = runtime.local(PresenceHub)
    try:
        await database_sync_to_async(connection_heartbeat)(server=SERVER_ID)
        await presence.close_unclosed()
        await presence.statuses_expired(await database_sync_to_async(presence_status_expire)())
        presence.beats_since_failure += 1
        if presence.beats_since_failure >= 2:
            removed, leaves = await database_sync_to_async(presence_sweep)()
            metrics.SWEEP_RUNS.inc()
            metrics.STALE_REMOVED.inc(removed)
            if removed or leaves:
                logger.info("presence sweep removed %d stale sockets, %d users went offline", removed, len(leaves))
            presence.publish(leaves)
    except Exception:
        presence.beats_since_failure = 0
        raise


@periodic(interval=lambda: settings.SOCKET_SESSION_CHECK_INTERVAL, wait_first=True)
async def session_check(runtime: Runtime) -> None:
    """Close the sockets whose session expired or was deleted, or whose user was deactivated in bulk.

    A session that expires fires no signal, and one deleted by an admin or
    `clearsessions` fires none either: look for them, one query per round.
    """
    if not runtime.sockets:
        return
    ended = await database_sync_to_async(connection_sessions_ended)(server=SERVER_ID)
    if ended:
        logger.info("closing %d sockets whose session ended or whose user is inactive", len(ended))
        await sockets_end(ended, "session ended or account deactivated")


@on_stop
async def forget_this_process(runtime: Runtime) -> None:
    """Called when the process stops: no row of it may outlive it, or its users would stay online until the sweep."""

    def forget() -> list:
        leaves = []
        for user_id in connection_server_close(server=SERVER_ID):
            leave = presence_settle(user_id=user_id)
            if leave is not None:
                leaves.append(leave)
        return leaves

    runtime.local(PresenceHub).publish(await database_sync_to_async(forget)())
