"""WebSocket plumbing shared by every endpoint: auth, safe decoding, ping, presence registration."""

import asyncio
import logging
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch
from django.conf import settings

from presence import metrics, protocol
from presence.fanout import LAYER_TIMEOUT, fanout
from presence.protocol import ProtocolError
from presence.runtime import SERVER_ID, hub
from presence.services import (
    SessionEnded,
    TooManySockets,
    connection_close,
    connection_open,
    connection_state_set,
    presence_settle,
    presence_state_settle,
)

logger = logging.getLogger(__name__)


class SocketConsumer(AsyncWebsocketConsumer):
    """A logged-in socket that counts towards its user's presence.

    Subclasses name their endpoint, the groups they join, the client frame
    types they take (mapped to methods through an explicit table, never by
    name), and what to send once the socket is registered.
    """

    endpoint: str = ""
    room: str = ""
    client_types: dict[str, str] = {protocol.PING: "on_ping"}

    registered = False
    registered_at = 0.0  # time.monotonic() when the socket was registered
    joined: tuple[str, ...] = ()
    accepted = False
    layer_down = False
    # Forwards that arrive between joining the groups and sending the initial
    # frames wait here, so that a client always gets its snapshot first.
    held: list[str] | None = None

    async def __call__(self, scope, receive, send) -> None:
        try:
            await self._serve(scope, receive, send)
        finally:
            if self.registered:
                # Daphne cancels an instance whose socket went away without a
                # websocket.disconnect (a handshake it rejected after its connect
                # timeout while connect() ran): forget the socket all the same,
                # or its row would be kept fresh by the heartbeat for ever
                # (disconnect() finishes that even if cancelled again).
                await self.disconnect(1006)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per-socket flood control: a token bucket of frames and a count of
        # frames refused since the client last paused. Per socket, so it lives
        # with the socket; per-user limits that span processes belong in
        # shared storage instead.
        self.frame_tokens = float(settings.SOCKET_FRAME_BURST)
        self.frame_refill_at = time.monotonic()
        self.flood_strikes = 0
        # Set once the server decided to close: frames still queued are ignored.
        self.closing = False
        self.handler_lock = asyncio.Lock()

    async def connect(self) -> None:
        """Called when the handshake arrives; close codes need an accepted socket."""
        await self.accept()
        self.accepted = True
        if self.layer_down:
            await self.close_with(protocol.CLOSE_TRY_AGAIN_LATER, "channel layer down")
            return
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close_with(protocol.CLOSE_NOT_LOGGED_IN, "not logged in")
            return
        refusal = await self.refusal()
        if refusal is not None:
            await self.close_with(refusal, "refused by the endpoint")
            return
        self.held = []
        try:
            await self.register(user)
        except SessionEnded:
            await self.close_with(protocol.CLOSE_NOT_LOGGED_IN, "session ended before registration")
            return
        except TooManySockets:
            await self.close_with(protocol.CLOSE_TOO_MANY_SOCKETS, "too many sockets for this user")
            return
        except Exception:
            logger.exception("%s socket could not be registered", self.endpoint)
            await self.close_with(protocol.CLOSE_TRY_AGAIN_LATER, "registration failed")
            return
        await self.opened()
        held, self.held = self.held, None
        for text in held:
            await self.send(text_data=text)

    async def refusal(self) -> int | None:
        """Called before registration; return a close code to refuse the socket."""
        return None

    def groups_for(self) -> tuple[str, ...]:
        """The channel-layer groups this socket listens to."""
        return ()

    async def opened(self) -> None:
        """Called once the socket counts as present: send the initial frames."""

    async def closed(self) -> None:
        """Called after a registered socket is forgotten."""

    async def register(self, user) -> None:
        self.joined = self.groups_for()
        session = self.scope.get("session")
        try:
            # Join the groups first, so that no event between the snapshot and the join is lost.
            for group in self.joined:
                # Bounded: a hung Redis would hold the handshake for redis-py's timeouts and retries.
                await asyncio.wait_for(self.group_join(group), LAYER_TIMEOUT)
            if settings.CHANNEL_FANOUT == "process":
                # Before the row: a session end may be sent to it as soon as it exists.
                fanout().attach(self)
            join = await database_sync_to_async(connection_open)(
                user=user,
                channel_name=self.channel_name,
                server=SERVER_ID,
                endpoint=self.endpoint,
                session_key=getattr(session, "session_key", None) or "",
                room=self.room,
            )
        except BaseException:
            # A refused socket must not stay in the groups (disconnect() only
            # cleans up registered sockets).
            await self.leave_groups()
            raise
        self.registered = True
        self.registered_at = time.monotonic()
        metrics.OPEN_SOCKETS.labels(self.endpoint).inc()
        logger.info("socket open", extra=self.log_fields())
        presence_hub = hub()
        presence_hub.socket_opened(self)
        if join is not None:
            presence_hub.publish([join])
        else:
            # An active socket of a user who was away brings them back.
            change = await database_sync_to_async(presence_state_settle)(user_id=user.pk)
            if change is not None:
                presence_hub.publish([change])

    async def group_join(self, group: str) -> None:
        if settings.CHANNEL_FANOUT == "process":
            await fanout().join(group, self, self.channel_layer)
        else:
            await self.channel_layer.group_add(group, self.channel_name)

    async def group_leave(self, group: str) -> None:
        if settings.CHANNEL_FANOUT == "process":
            await fanout().leave(group, self)
        else:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def disconnect(self, code: int) -> None:
        """Called when the socket has closed, from either side."""
        if not self.registered:
            return
        self.registered = False
        metrics.OPEN_SOCKETS.labels(self.endpoint).dec()
        metrics.SOCKETS_CLOSED.labels(self.endpoint, str(code)).inc()
        logger.info("socket closed", extra={**self.log_fields(), "code": code})
        presence_hub = hub()
        presence_hub.socket_closed(self)
        # Daphne cancels an instance 10 s after its socket closed (its
        # application_close_timeout). When thousands of sockets close at once,
        # their database calls queue for longer than that: forgetting the
        # socket runs in a task of the process, which the cancel cannot cut
        # short and leave the user online with no socket.
        await presence_hub.finish(self._forget(presence_hub))

    async def _forget(self, presence_hub) -> None:
        # The row first: it is what presence counts, and a layer that is down
        # (or hung until the socket timeout) must not keep the user online.
        try:
            user_id = await database_sync_to_async(connection_close)(channel_name=self.channel_name)
        except Exception:
            logger.exception("%s socket could not be forgotten; the heartbeat will retry", self.endpoint)
            presence_hub.close_later(self.channel_name)
            await self.leave_groups()
            return
        await self.leave_groups()
        await self.closed()
        if user_id is None:
            # Sockets are left: if only idle ones, the user is now away.
            change = await database_sync_to_async(presence_state_settle)(user_id=self.scope["user"].pk)
            if change is not None:
                presence_hub.publish([change])
            return
        # A page reload closes the last socket and opens a new one within a
        # moment: wait before announcing the leave so that it does not flicker.
        if settings.PRESENCE_LEAVE_GRACE > 0:
            await asyncio.sleep(settings.PRESENCE_LEAVE_GRACE)
        leave = await database_sync_to_async(presence_settle)(user_id=user_id)
        if leave is not None:
            presence_hub.publish([leave])

    async def leave_groups(self) -> None:
        """Leave the socket's groups, as far as the layer lets us; membership expires anyway."""
        for group in self.joined:
            try:
                await asyncio.wait_for(self.group_leave(group), LAYER_TIMEOUT)
            except Exception:
                metrics.LAYER_ERRORS.labels("group_discard").inc()
                logger.warning("%s socket could not leave group %s", self.endpoint, group)
        self.joined = ()

    async def _serve(self, scope, receive, send) -> None:
        """With the per-process fan-out, serve the socket without a channel of its own on the layer.

        AsyncConsumer.__call__ gives every consumer a layer channel and a
        receive waiting on it; here everything for the socket reaches it
        through its process (presence/fanout.py), and its name is an address
        in the process's inbox.
        """
        if settings.CHANNEL_FANOUT != "process":
            await super().__call__(scope, receive, send)
            return
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.base_send = send
        registry = fanout()
        # Attached when it registers (register()): a socket refused before that
        # starts no receive on the layer.
        self.channel_name = await registry.address(self.channel_layer)
        try:
            await await_many_dispatch([receive], self.dispatch)
        except StopConsumer:
            pass
        finally:
            registry.detach(self)

    # AsyncConsumer.__call__ sets channel_receive to the layer's receive for its
    # dispatch loop. A layer that fails (Redis down, restarted or hung) would
    # raise out of that loop: a handshake 500 or a 1011. The setter keeps the
    # layer's receive and the loop gets _layer_events instead, which turns the
    # first failure into one layer.lost event and then waits for the close.
    @property
    def channel_receive(self):
        return self._layer_events

    @channel_receive.setter
    def channel_receive(self, layer_receive) -> None:
        self._layer_receive = layer_receive

    async def _layer_events(self) -> dict[str, Any]:
        if self.layer_down:
            await asyncio.Event().wait()  # never set: the socket is closing
        try:
            return await self._layer_receive()
        except Exception as error:
            self.layer_down = True
            metrics.LAYER_ERRORS.labels("receive").inc()
            logger.warning("%s socket lost the channel layer (%s)", self.endpoint, type(error).__name__)
            return {"type": "layer.lost"}

    async def layer_lost(self, event: dict[str, Any]) -> None:
        """Called when the channel layer failed under this socket: close with 4503 so that the client resyncs."""
        self.layer_down = True
        if not self.accepted:
            return  # connect() accepts, sees layer_down and closes with 4503
        await self.close_with(protocol.CLOSE_TRY_AGAIN_LATER, "channel layer lost")

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called with each client frame: decode, look up its handler, answer errors in-band."""
        if self.closing:
            return
        if not self.within_frame_rate():
            self.flood_strikes += 1
            if self.flood_strikes > settings.SOCKET_FLOOD_STRIKES:
                await self.close_with(protocol.CLOSE_POLICY_VIOLATION, "kept flooding after rate_limited")
                return
            self.log_refused_frame(protocol.RATE_LIMITED)
            await self.send_frame(protocol.error_frame(protocol.RATE_LIMITED, "Too many frames; slow down."))
            return
        if text_data is None:
            await self.close_with(protocol.CLOSE_UNSUPPORTED_DATA, "binary frame")
            return
        if len(text_data) > protocol.MAX_FRAME_CHARS // 4 and (
            len(text_data.encode("utf-8", "surrogatepass")) > protocol.MAX_FRAME_CHARS
        ):
            await self.close_with(protocol.CLOSE_TOO_LARGE, "frame over the size limit")
            return
        try:
            frame = protocol.decode_frame(text_data)
            method = self.client_types.get(frame["type"])
            if method is None:
                raise ProtocolError(protocol.UNKNOWN_TYPE, "This endpoint does not take frames of that type.")
            await getattr(self, method)(frame)
        except ProtocolError as error:
            self.log_refused_frame(error.code)
            await self.send_frame(protocol.error_frame(error.code, error.detail, error.client_id))

    def within_frame_rate(self) -> bool:
        """Take one frame from the socket's token bucket; False when it is empty."""
        now = time.monotonic()
        burst = float(settings.SOCKET_FRAME_BURST)
        tokens = min(burst, self.frame_tokens + (now - self.frame_refill_at) * settings.SOCKET_FRAME_RATE)
        self.frame_refill_at = now
        if tokens >= burst:
            # The client paused long enough to refill the whole burst: forgive it.
            self.flood_strikes = 0
        if tokens < 1:
            self.frame_tokens = tokens
            return False
        self.frame_tokens = tokens - 1
        return True

    async def close_with(self, code: int, reason: str) -> None:
        """Close the socket with a code the browser can read, and log why (never the frame)."""
        self.closing = True
        fields = self.log_fields()
        logger.info(
            "closing %s socket: code=%s reason=%s user=%s address=%s",
            self.endpoint,
            code,
            reason,
            fields["user"] or "anonymous",
            fields["remote"] or "-",
            extra={**fields, "code": code, "reason": reason},
        )
        await self.close(code=code)
        # Forget the socket now rather than when the client acknowledges the
        # close, which a hostile or dead client may never do.
        await self.disconnect(code)

    def log_refused_frame(self, code: str) -> None:
        metrics.FRAMES_REFUSED.labels(code).inc()
        fields = self.log_fields()
        logger.info(
            "refused %s frame: reason=%s user=%s address=%s",
            self.endpoint,
            code,
            fields["user"] or "anonymous",
            fields["remote"] or "-",
            extra={**fields, "reason": code},
        )

    def log_fields(self) -> dict[str, Any]:
        """Who and where, for log lines; never a body, cookie or session key."""
        user = self.scope.get("user")
        client = self.scope.get("client") or ("", 0)
        headers = dict(self.scope.get("headers") or [])
        return {
            "user": user.get_username() if user is not None and user.is_authenticated else None,
            "remote": client[0] if client else None,
            "origin": headers.get(b"origin", b"").decode("latin-1")[:200] or None,
            "endpoint": self.endpoint,
            "room": self.room or None,
        }

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=protocol.dumps(frame))

    async def on_ping(self, frame: dict[str, Any]) -> None:
        await self.send_frame(protocol.pong_frame())

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Called with every message for this consumer: a forwarded frame goes straight out."""
        if message["type"] == protocol.EVENT_FORWARD:
            # Channels runs close_old_connections() in a worker thread before
            # every handler; a forward touches no database, and that thread hop
            # was 40% of a busy server's time (docs/benchmarks.md).
            await self.frame_forward(message)
            return
        # One handler at a time, as Channels runs them: with the per-process
        # fan-out, events from the process's inbox arrive in tasks of their
        # own (a session end must not run in the middle of connect()).
        async with self.handler_lock:
            await super().dispatch(message)

    async def on_presence_state(self, frame: dict[str, Any]) -> None:
        """Called with {"type": "presence.state", "state": "idle" | "active"} from the tab.

        Not in the base table: an endpoint takes it by listing
        protocol.PRESENCE_STATE in its client_types.
        """
        idle = protocol.tab_state(frame)
        change = await database_sync_to_async(connection_state_set)(
            channel_name=self.channel_name, user_id=self.scope["user"].pk, idle=idle
        )
        if change is not None:
            hub().publish([change])

    async def frame_forward(self, event: dict[str, Any]) -> None:
        """Called with a frame that a group broadcast, already serialized once for all receivers."""
        # Nothing after the server has closed the socket (a broadcast already
        # queued for it, such as its own user's leave).
        if event.get("skip") == self.channel_name or self.closing:
            return
        if self.held is not None:
            self.held.append(event["text"])
            return
        await self.send(text_data=event["text"])

    async def session_end(self, event: dict[str, Any]) -> None:
        """Called when this socket's session ended: log-out, password change, expiry, or an admin."""
        await self.close_with(protocol.CLOSE_SESSION_ENDED, event.get("reason") or "session ended")
