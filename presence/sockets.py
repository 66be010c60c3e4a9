"""A socket that counts towards its user's presence: the base of every logged-in endpoint's consumer."""

import asyncio
import logging
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from presence import protocol
from presence.hub import hub
from presence.services import (
    Registration,
    SessionEnded,
    TooManySockets,
    connection_state_set,
    presence_state_settle,
    presence_status_set,
)
from realtime import protocol as transport
from realtime.consumers import Refused, SocketConsumer
from realtime.runtime import SERVER_ID

logger = logging.getLogger("realtime.sockets")


class TrackedSocket(SocketConsumer):
    """A logged-in socket whose user is online while it is open (any endpoint, any process)."""

    client_types = {
        **SocketConsumer.client_types,
        # Every tab reports idle and active: a user is away only when every tab is idle.
        protocol.PRESENCE_STATE: "on_presence_state",
        # The status menu in every page's header sends it on the tab's socket, whichever endpoint.
        protocol.STATUS_SET: "on_status_set",
    }

    def groups_for(self) -> tuple[str, ...]:
        # Every socket of a user hears what is meant for that user alone (their other tabs and devices).
        return (protocol.user_group(self.scope["user"].pk), *self.topic_groups())

    def topic_groups(self) -> tuple[str, ...]:
        """The groups of what this endpoint's socket is about (the presence feed, a room)."""
        return ()

    async def registering(self, user) -> None:
        """Record the socket (in a round with those opening beside it); announce the user if it made them online."""
        session = self.scope.get("session")
        registration = Registration(
            user_id=user.pk,
            username=user.get_username(),
            channel_name=self.channel_name,
            server=SERVER_ID,
            endpoint=self.endpoint,
            session_key=getattr(session, "session_key", None) or "",
            topic=self.topic,
        )
        presence = hub()
        try:
            opened = await presence.registrations.submit(registration)
        except SessionEnded:
            raise Refused(transport.CLOSE_NOT_LOGGED_IN, "session ended before registration") from None
        except TooManySockets:
            raise Refused(transport.CLOSE_TOO_MANY_SOCKETS, "too many sockets for this user") from None
        if opened.join is not None:
            presence.publish([opened.join])
        elif opened.was_away:
            # An active socket of a user who was away brings them back.
            change = await database_sync_to_async(presence_state_settle)(user_id=user.pk)
            if change is not None:
                presence.publish([change])

    async def closed(self) -> None:
        """Called once a closed socket is out of its groups, before its user's leave is settled."""

    async def forget(self) -> None:
        presence = hub()
        # The row first: it is what presence counts, and a layer that is down
        # (or hung until the socket timeout) must not keep the user online.
        # In a round with the sockets closing beside it (a deploy closes them all).
        try:
            user_id = await presence.closes.submit(self.channel_name)
        except Exception:
            logger.exception("%s socket could not be forgotten; the heartbeat will retry", self.endpoint)
            presence.close_later(self.channel_name)
            await self.leave_groups()
            return
        await self.leave_groups()
        await self.closed()
        if user_id is None:
            # Sockets are left: if only idle ones, the user is now away.
            change = await presence.settles.submit(("state", self.scope["user"].pk))
            if change is not None:
                presence.publish([change])
            return
        # A page reload closes the last socket and opens a new one within a
        # moment: wait before announcing the leave so that it does not flicker.
        if settings.PRESENCE_LEAVE_GRACE > 0:
            await asyncio.sleep(settings.PRESENCE_LEAVE_GRACE)
        leave = await presence.settles.submit(("leave", user_id))
        if leave is not None:
            presence.publish([leave])

    async def on_presence_state(self, frame: dict[str, Any]) -> None:
        """Called with {"type": "presence.state", "state": "idle" | "active"} from the tab."""
        idle = protocol.tab_state(frame)
        change = await database_sync_to_async(connection_state_set)(
            channel_name=self.channel_name, user_id=self.scope["user"].pk, idle=idle
        )
        if change is not None:
            hub().publish([change])

    async def on_status_set(self, frame: dict[str, Any]) -> None:
        """Called with {"type": "status.set", "text"?, "emoji"?, "expires_at"?, "dnd"?, "invisible"?}."""
        fields = protocol.status_fields(frame, allow_invisible=settings.PRESENCE_ALLOW_INVISIBLE, now=timezone.now())
        update = await database_sync_to_async(presence_status_set)(user=self.scope["user"], **fields)
        await hub().status_changed(update, user_id=self.scope["user"].pk)
