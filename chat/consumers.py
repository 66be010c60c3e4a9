import logging
import re
import time
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DatabaseError
from redis.exceptions import RedisError

from chat import metrics, protocol
from chat.activity import room_activity_changed
from chat.models import Membership, Room
from chat.selectors import (
    room_cursor,
    room_deleted_recently,
    room_history_cursor,
    room_messages_after,
    room_presence_statuses,
    room_resume,
    rooms_of_user_here,
)
from chat.services import (
    RoomForbidden,
    RoomMissing,
    membership_read,
    message_edit,
    message_post,
    message_react,
    rooms_enter,
)
from presence.protocol import user_group
from presence.sockets import TrackedSocket
from realtime import protocol as transport
from realtime.batch import Batch
from realtime.broadcast import broadcast
from realtime.coalesce import Coalescer
from realtime.protocol import ProtocolError, dumps
from realtime.runtime import Runtime, runtime
from realtime.shared import SharedReads

logger = logging.getLogger(__name__)

_MESSAGE_ID = re.compile(r"[0-9]{1,18}")
# A Redis that is down raises RedisError; one that hangs, a timeout once the socket timeout passes.
REDIS_ERRORS = (RedisError, OSError)


class ChatConsumer(TrackedSocket):
    """/ws/chat/<slug>/: history (or what was missed), then live messages, typing and room presence."""

    endpoint = protocol.ENDPOINT
    client_types = {
        **TrackedSocket.client_types,
        protocol.CHAT_MESSAGE: "on_message",
        protocol.CHAT_TYPING: "on_typing",
        protocol.CHAT_EDIT: "on_edit",
        protocol.CHAT_REACT: "on_react",
        protocol.CHAT_READ: "on_read",
    }

    chat_room: Room | None = None
    # The user's read marker as the socket opened (0: nothing read).
    last_read = 0
    last_typing = float("-inf")
    rate_strikes = 0

    async def refusal(self) -> int | None:
        """Called for a logged-in socket: 4404 for an invalid slug or no such room, 4403 for another's direct room.

        Opening a public room's socket makes the user a member, as opening its page does.
        """
        slug = self.scope["url_route"]["kwargs"]["slug"]
        if not protocol.slug_is_valid(slug):
            return transport.CLOSE_NOT_FOUND
        try:
            # In a round with the sockets opening rooms beside it.
            membership = await runtime().local(room_entries).submit((slug, self.scope["user"]))
        except RoomMissing:
            return transport.CLOSE_NOT_FOUND
        except RoomForbidden:
            return transport.CLOSE_FORBIDDEN
        self.chat_room = membership.room
        self.last_read = membership.last_read_id
        self.topic = slug
        return None

    def topic_groups(self) -> tuple[str, ...]:
        return (protocol.room_group(self.topic),)

    async def opened(self) -> None:
        """Send the history, or what was missed since ?cursor=<c> or ?after=<id>, then tell the room who is here."""
        cursor = self.query_value("cursor")
        after = None
        if cursor is None:
            try:
                after = self.after_id()
            except ProtocolError as error:
                # Answered in-band, and the history falls back to the last messages.
                await self.send_frame(transport.error_frame(error.code, error.detail))
        if cursor is None and after is None:
            # The last messages, read once for the sockets that open the room together.
            history = await runtime().local(room_histories).get(self.chat_room, after=self.registered_at)
            await self.send(text_data=history.frame_text(self.topic, self.last_read or None))
        else:
            await self.send_frame(await database_sync_to_async(self.history)(cursor, after))
        room_presence_changed(self.topic)

    def history(self, cursor: str | None, after: int | None) -> dict[str, Any]:
        """The chat.history frame of a socket that resumes (?cursor=<c> or ?after=<id>)."""
        if cursor is not None:
            return self.resumed_from_cursor(cursor)
        now = room_cursor(room=self.chat_room)
        messages, has_more, deleted = self.resumed(after)
        return protocol.history_frame(
            self.topic, messages, has_more, deleted, cursor=now, last_read=self.last_read or None
        )

    def resumed_from_cursor(self, cursor: str) -> dict[str, Any]:
        """What a client that saw up to `cursor` missed; the last messages with reset when it is unknown or expired."""
        missed = room_resume(room=self.chat_room, cursor=cursor)
        if missed is None:
            messages, has_more, now = room_history_cursor(room=self.chat_room)
            return protocol.history_frame(
                self.topic, messages, has_more, cursor=now, reset=True, last_read=self.last_read or None
            )
        return protocol.history_frame(
            self.topic,
            missed["messages"],
            False,
            cursor=missed["cursor"],
            changes=missed["changes"],
            last_read=self.last_read or None,
        )

    def query_value(self, name: str) -> str | None:
        query = self.scope.get("query_string", b"").decode("latin-1")
        values = parse_qs(query, keep_blank_values=True).get(name)
        return values[-1] if values else None

    async def closed(self) -> None:
        room_presence_changed(self.topic)

    def resumed(self, after: int) -> tuple[list[dict], bool, list[int]]:
        """What a client that saw up to `after` missed: newer messages, and the recently deleted ones.

        Every recent deletion, not only those up to `after`: the client also
        shows messages it got live, above its resume point.
        """
        messages, has_more = room_messages_after(room=self.chat_room, after=after)
        return messages, has_more, room_deleted_recently(room=self.chat_room)

    def after_id(self) -> int | None:
        """The id in ?after=<id>, None without one; ProtocolError when it is malformed."""
        value = self.query_value("after")
        if value is None:
            return None
        if _MESSAGE_ID.fullmatch(value) is None:
            raise ProtocolError(transport.INVALID, "'after' must be a message id.")
        return int(value)

    async def on_message(self, frame: dict[str, Any]) -> None:
        client_id = protocol.client_id_echo(frame.get("client_id"))
        fanout, group = runtime().fanout, protocol.room_group(self.topic)
        if fanout.behind(group) or await fanout.inboxes_behind(group):
            # The room's fan-out is behind (here, or in a process's inbox), not this sender: no strike, nothing stored.
            raise ProtocolError(transport.RATE_LIMITED, "The room is busy; send it again shortly.", client_id=client_id)
        try:
            message, new = await database_sync_to_async(message_post)(
                room=self.chat_room, user=self.scope["user"], body=frame.get("body"), client_id=frame.get("client_id")
            )
        except ProtocolError as error:
            if error.code == transport.RATE_LIMITED:
                self.rate_strikes += 1
                if self.rate_strikes > settings.CHAT_FLOOD_CLOSE_AFTER:
                    await self.close_with(transport.CLOSE_POLICY_VIOLATION, "kept sending chat after rate_limited")
                    return
            error.client_id = client_id
            raise
        except (DatabaseError, *REDIS_ERRORS):
            # The database, or the rate limit's Redis: either way nothing was stored.
            logger.exception("chat message in %s could not be stored", self.topic)
            raise ProtocolError(
                transport.UNAVAILABLE, "The message was not stored; send it again.", client_id=client_id
            ) from None
        self.rate_strikes = 0
        if not new:
            # A retry: the room has it already; only the sender hears it again.
            await self.send_frame(message)
            return
        metrics.MESSAGES_STORED.inc()
        # The sender's copy goes straight back: it is the acknowledgement, and
        # must not depend on a group that a restarted Redis may have forgotten.
        await self.send_frame(message)
        group = protocol.room_group(self.topic)
        if await broadcast(group, message, label="chat_message", skip=self.channel_name):
            metrics.MESSAGES_BROADCAST.inc()
        # The members' counts go out from a coalesced task, never on this path.
        room_activity_changed(self.chat_room, message)

    async def on_read(self, frame: dict[str, Any]) -> None:
        """Called with {"type": "chat.read", "up_to": <id>}: move the marker forward; every tab of the user hears it."""
        up_to = protocol.read_up_to(frame)
        user = self.scope["user"]
        try:
            marker = await database_sync_to_async(membership_read)(room=self.chat_room, user=user, up_to=up_to)
        except DatabaseError:
            logger.exception("read marker in %s could not be moved", self.topic)
            raise ProtocolError(transport.UNAVAILABLE, "The read marker was not moved; send it again.") from None
        if marker is None:
            return  # there or past it already: nothing moved, nobody to tell
        read = protocol.read_frame(self.topic, marker.up_to, marker.unread, marker.mentions)
        await broadcast(user_group(user.pk), read, label="chat_read")

    async def on_edit(self, frame: dict[str, Any]) -> None:
        edited = await self.stored_change(
            message_edit, message_id=frame.get("id"), body=frame.get("body"), what="The edit"
        )
        await broadcast(protocol.room_group(self.topic), edited, label="chat_edited")

    async def on_react(self, frame: dict[str, Any]) -> None:
        reactions = await self.stored_change(
            message_react, message_id=frame.get("id"), emoji=frame.get("emoji"), what="The reaction"
        )
        await broadcast(protocol.room_group(self.topic), reactions, label="chat_reactions")

    async def stored_change(self, service, *, what: str, **fields: Any) -> dict[str, Any]:
        """Run an edit or reaction service for this socket's user and room; a database failure is `unavailable`."""
        try:
            return await database_sync_to_async(service)(room=self.chat_room, user=self.scope["user"], **fields)
        except DatabaseError:
            logger.exception("chat change in %s could not be stored", self.topic)
            raise ProtocolError(transport.UNAVAILABLE, f"{what} was not stored; try again.") from None

    async def on_typing(self, frame: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self.last_typing < settings.CHAT_TYPING_INTERVAL:
            return
        self.last_typing = now
        typing = protocol.typing_frame(self.scope["user"].get_username())
        # Best effort: a layer that fails loses this hint, not the socket.
        await broadcast(
            protocol.room_group(self.topic), typing, label="chat_typing", skip=self.channel_name, retry=False
        )


def room_entries(runtime: Runtime) -> Batch[tuple[str, Any], Membership]:
    """This process's batch of sockets opening rooms (chat.services.rooms_enter)."""
    return Batch(runtime, rooms_enter, name="room entries")


# Distinct chat.history frames kept serialized per shared read (readers' markers differ; most share one).
HISTORY_TEXTS_KEPT = 16


class RoomHistory:
    """A room's last messages and cursor as one read found them, for the sockets that opened the room together.

    Their chat.history frames differ only by the reader's marker: each
    distinct frame is serialized once (a storm into one room serialized the
    same 50 messages for every socket).
    """

    def __init__(self, room: Room) -> None:
        self.messages, self.has_more, self.cursor = room_history_cursor(room=room)
        self.texts: dict[tuple[str, int | None], str] = {}

    def frame_text(self, slug: str, last_read: int | None) -> str:
        key = (slug, last_read)
        text = self.texts.get(key)
        if text is None:
            frame = protocol.history_frame(slug, self.messages, self.has_more, cursor=self.cursor, last_read=last_read)
            text = dumps(frame)
            if len(self.texts) < HISTORY_TEXTS_KEPT:
                self.texts[key] = text
        return text


def room_histories(runtime: Runtime) -> SharedReads[Room, RoomHistory]:
    """This process's reads of rooms' last messages and cursors, shared by the sockets that open a room together."""
    return SharedReads(runtime, RoomHistory)


# Members on this process past which a room's list window grows (linearly), and its longest window.
ROOM_LIST_CROWD = 200
ROOM_LIST_MAX_WINDOW = 5.0


class RoomPresence:
    """room.presence for the rooms of this process's sockets: at most one per room per CHAT_PRESENCE_WINDOW.

    Each join and leave sends the whole list to the whole room, so a crowd
    joining a room of N costs N² deliveries; coalesced, a burst of joins costs
    one list per window, read after the last of them.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.lists = Coalescer(runtime, self._publish, window=self._window)

    def _window(self, room: str) -> float:
        """CHAT_PRESENCE_WINDOW, longer in a crowd: each list goes to every member here, so a room of N costs N².

        A room of 5,000 filling up sent a 60 KB list to thousands of sockets
        four times a second; a window that grows with the members here keeps
        a room's lists to about the same bytes a second per member (at most
        one list every ROOM_LIST_MAX_WINDOW seconds).
        """
        here = len(self.runtime.fanout.groups.get(protocol.room_group(room), ()))
        window = settings.CHAT_PRESENCE_WINDOW * max(1.0, here / ROOM_LIST_CROWD)
        return min(window, max(settings.CHAT_PRESENCE_WINDOW, ROOM_LIST_MAX_WINDOW))

    async def _publish(self, room: str, batch: dict) -> bool:
        users, statuses = await database_sync_to_async(room_presence_statuses)(slug=room)
        frame = protocol.presence_frame(room, users, statuses)
        # Not retried by broadcast(): the coalescer reads the list again when it retries.
        return await broadcast(protocol.room_group(room), frame, label="room_presence", retry=False)


def room_presence_changed(room: str) -> None:
    """Someone came into or left a room on this process: its list goes out within the window."""
    runtime().local(RoomPresence).lists.add(room, "users", True)


def user_status_changed(sender, user_id: int, **kwargs) -> None:
    """Called (on the event loop) when a user's status or invisibility changed: their rooms' lists go out again."""
    current = runtime()

    async def refresh() -> None:
        for room in await database_sync_to_async(rooms_of_user_here)(user_id=user_id):
            room_presence_changed(room)

    current.spawn(refresh(), failure="room lists could not be refreshed after a status change")
