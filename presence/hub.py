"""Presence's per-process work: coalesced diffs, a shared snapshot, the heartbeat, the sweep and the session check.

Nothing here is shared state: the database holds presence; a process keeps
only the transitions waiting for its next diff and the rows it could not
delete yet. The runtime (realtime.runtime) runs the periodic jobs and keeps
every task.
"""

import logging
from dataclasses import dataclass, replace
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from presence import metrics, protocol
from presence.selectors import presence_online_count, presence_online_users, presence_recently_seen
from presence.services import (
    Join,
    Leave,
    Opened,
    Registration,
    StateChange,
    StatusUpdate,
    Transition,
    connection_close,
    connection_heartbeat,
    connection_server_close,
    connection_sessions_ended,
    connections_open,
    presence_settle,
    presence_state_settle,
    presence_status_expire,
    presence_sweep,
)
from realtime.batch import Batch, each, on_rounds_thread
from realtime.broadcast import broadcast
from realtime.coalesce import Coalescer
from realtime.fanout import sockets_end
from realtime.protocol import dumps, iso
from realtime.runtime import SERVER_ID, Runtime, on_stop, periodic, runtime
from realtime.shared import SharedReads

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
        self.diffs = Coalescer(
            runtime, self._flush, window=lambda topic: settings.PRESENCE_COALESCE_WINDOW, merge=_merge
        )
        # Sockets that open together are recorded together: a storm of reconnects costs a transaction per round.
        self.registrations: Batch[Registration, Opened] = Batch(
            runtime, connections_open, name="socket registrations", abandoned=self._registration_abandoned
        )
        # And sockets that close together (a deploy closes a process's every socket) are forgotten in rounds.
        self.closes: Batch[str, int | None] = Batch(runtime, each(_connection_close), name="socket closes")
        self.settles: Batch[tuple[str, int], Any] = Batch(runtime, each(_settle), name="presence settles")
        # Sockets that closed while the database was unreachable: their rows
        # would be refreshed by the heartbeat for ever, so it retries them.
        self.unclosed: set[str] = set()
        # After an outage, skip sweeping until the other processes have had a
        # heartbeat interval to refresh their own rows (they were cut off too).
        self.beats_since_failure = 2
        # The snapshot frame, serialized, read once for the sockets that open together.
        self.snapshots: SharedReads[None, str] = SharedReads(runtime, _snapshot_read)

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
            # On the rounds thread, with the closes and settles that made these changes: on Channels' database
            # thread a busy room's messages and counts kept a leave waiting (1.5-1.9 s in an overloaded soak).
            count = await on_rounds_thread(presence_online_count)
        except Exception as error:
            logger.warning("presence diff could not count who is online (%s)", type(error).__name__)
            return False
        # Not retried by broadcast(): the coalescer puts the batch back, and a newer change of a user wins.
        frame = protocol.diff_frame(joins, leaves, count, states)
        return await broadcast(group, frame, label="presence_diff", retry=False)

    async def snapshot_text(self, *, after: float) -> str:
        """A snapshot frame read after `after`, shared by every socket waiting for one (realtime.shared).

        A login storm costs a few snapshot queries, not one per socket.
        """
        return await self.snapshots.get(None, after=after)

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

    def _registration_abandoned(self, registration: Registration, opened: Opened) -> None:
        # The handshake was cancelled (its client went away) after its row was written: nobody will close it.
        if opened.join is not None:
            self.publish([opened.join])
        self.close_later(registration.channel_name)
        self.runtime.spawn(self.close_unclosed(), failure="an abandoned socket's row could not be deleted")

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


def _connection_close(channel_name: str) -> int | None:
    return connection_close(channel_name=channel_name)


def _settle(item: tuple[str, int]) -> StateChange | Leave | None:
    """("leave", user id): presence_settle(); ("state", user id): presence_state_settle()."""
    what, user_id = item
    return presence_settle(user_id=user_id) if what == "leave" else presence_state_settle(user_id=user_id)


def _snapshot_read(key: None) -> str:
    return dumps(protocol.snapshot_frame(presence_online_users(), presence_recently_seen()))


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
