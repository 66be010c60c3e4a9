import asyncio
import logging
import re
import time
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DatabaseError
from redis.exceptions import RedisError

from chat import protocol
from chat.models import Room
from chat.selectors import room_by_slug, room_deleted_recently, room_history, room_messages_after, room_presence
from chat.services import message_post
from presence import metrics
from presence import protocol as base
from presence.loops import per_loop
from presence.models import Connection
from presence.protocol import ProtocolError
from presence.runtime import hub
from presence.sockets import SocketConsumer

logger = logging.getLogger(__name__)

_MESSAGE_ID = re.compile(r"[0-9]{1,18}")
# A Redis that is down raises RedisError; one that hangs, a timeout once the socket timeout passes.
REDIS_ERRORS = (RedisError, OSError)


class ChatConsumer(SocketConsumer):
    """/ws/chat/<slug>/: history (or what was missed), then live messages, typing and room presence."""

    endpoint = Connection.Endpoint.CHAT
    client_types = {
        base.PING: "on_ping",
        # A chat tab reports idle and active too: a user is away only when every tab is idle.
        base.PRESENCE_STATE: "on_presence_state",
        protocol.CHAT_MESSAGE: "on_message",
        protocol.CHAT_TYPING: "on_typing",
    }

    chat_room: Room | None = None
    last_typing = float("-inf")
    rate_strikes = 0

    async def refusal(self) -> int | None:
        """Called for a logged-in socket: 4404 for an invalid slug or a room that does not exist."""
        slug = self.scope["url_route"]["kwargs"]["slug"]
        if not protocol.slug_is_valid(slug):
            return base.CLOSE_NOT_FOUND
        self.chat_room = await database_sync_to_async(room_by_slug)(slug=slug)
        if self.chat_room is None:
            return base.CLOSE_NOT_FOUND
        self.room = slug
        return None

    def groups_for(self) -> tuple[str, ...]:
        return (protocol.room_group(self.room),)

    async def opened(self) -> None:
        """Send the history, or what was missed since ?after=<id>, then tell the room who is here."""
        try:
            after = self.after_id()
        except ProtocolError as error:
            # Answered in-band, and the history falls back to the last messages.
            await self.send_frame(base.error_frame(error.code, error.detail))
            after = None
        if after is None:
            messages, has_more = await database_sync_to_async(room_history)(room=self.chat_room)
            deleted = None
        else:
            messages, has_more, deleted = await database_sync_to_async(self.resumed)(after)
        await self.send_frame(protocol.history_frame(self.room, messages, has_more, deleted))
        await self.presence_changed()

    async def closed(self) -> None:
        await self.presence_changed()

    def resumed(self, after: int) -> tuple[list[dict], bool, list[int]]:
        """What a client that saw up to `after` missed: newer messages, and the recently deleted ones.

        Every recent deletion, not only those up to `after`: the client also
        shows messages it got live, above its resume point.
        """
        messages, has_more = room_messages_after(room=self.chat_room, after=after)
        return messages, has_more, room_deleted_recently(room=self.chat_room)

    def after_id(self) -> int | None:
        """The id in ?after=<id>, None without one; ProtocolError when it is malformed."""
        query = self.scope.get("query_string", b"").decode("latin-1")
        values = parse_qs(query, keep_blank_values=True).get("after")
        if not values:
            return None
        if _MESSAGE_ID.fullmatch(values[-1]) is None:
            raise ProtocolError(base.INVALID, "'after' must be a message id.")
        return int(values[-1])

    async def presence_changed(self) -> None:
        if settings.CHAT_PRESENCE_WINDOW > 0:
            _outbox().schedule(self.room)
        else:
            await _publish_room_presence(self.room)

    async def on_message(self, frame: dict[str, Any]) -> None:
        client_id = protocol.client_id_echo(frame.get("client_id"))
        try:
            message, new = await database_sync_to_async(message_post)(
                room=self.chat_room, user=self.scope["user"], body=frame.get("body"), client_id=frame.get("client_id")
            )
        except ProtocolError as error:
            if error.code == base.RATE_LIMITED:
                self.rate_strikes += 1
                if self.rate_strikes > settings.CHAT_FLOOD_CLOSE_AFTER:
                    await self.close(code=base.CLOSE_POLICY_VIOLATION)
                    return
            error.client_id = client_id
            raise
        except (DatabaseError, *REDIS_ERRORS):
            # The database, or the rate limit's Redis: either way nothing was stored.
            logger.exception("chat message in %s could not be stored", self.room)
            raise ProtocolError(
                base.UNAVAILABLE, "The message was not stored; send it again.", client_id=client_id
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
        event = base.forward_event(message, skip=self.channel_name)
        if await hub().group_send(protocol.room_group(self.room), event, label="chat_message"):
            metrics.MESSAGES_BROADCAST.inc()

    async def on_typing(self, frame: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self.last_typing < settings.CHAT_TYPING_INTERVAL:
            return
        self.last_typing = now
        typing = protocol.typing_frame(self.scope["user"].get_username())
        # Best effort: a layer that fails loses this hint, not the socket.
        event = base.forward_event(typing, skip=self.channel_name)
        await hub().try_group_send(protocol.room_group(self.room), event, label="chat_typing")


async def _publish_room_presence(room: str) -> None:
    # On failure the next join or leave sends the whole list again.
    try:
        users = await database_sync_to_async(room_presence)(slug=room)
    except Exception:
        logger.exception("room presence for %s could not be read", room)
        return
    frame = protocol.presence_frame(room, users)
    await hub().try_group_send(protocol.room_group(room), base.forward_event(frame), label="room_presence")


class RoomPresenceOutbox:
    """At most one room.presence per room per CHAT_PRESENCE_WINDOW from this process (one event loop).

    Each join and leave sends the whole list to the whole room, so a crowd
    joining a room of N costs N² deliveries; coalesced, a burst of joins costs
    one list per window, read after the last of them.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.scheduled: dict[str, asyncio.Task] = {}
        self.last_sent: dict[str, float] = {}

    def schedule(self, room: str) -> None:
        if room in self.scheduled:
            return  # the publish already scheduled reads the room after this change
        delay = self.last_sent.get(room, float("-inf")) + settings.CHAT_PRESENCE_WINDOW - self.loop.time()
        self.scheduled[room] = self.loop.create_task(self._publish(room, max(0.0, delay)))

    async def _publish(self, room: str, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        finally:
            # Changes from here on schedule the next publish.
            del self.scheduled[room]
        self.last_sent[room] = self.loop.time()
        await _publish_room_presence(room)
        cutoff = self.loop.time() - settings.CHAT_PRESENCE_WINDOW
        for stale in [name for name, sent in self.last_sent.items() if sent < cutoff]:
            del self.last_sent[stale]


_outbox = per_loop(RoomPresenceOutbox)
