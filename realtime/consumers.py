"""The base consumer every endpoint builds on, and the answer to a path that matches none.

SocketConsumer moves frames: it accepts, checks that the user is logged in,
joins the socket's groups through the per-process fan-out, decodes client
frames safely and hands each to the method its type names in an explicit
table, answers errors in-band, and closes through one path that logs and
forgets the socket at once. What a socket means (presence, a room) is the
subclasses' business, through the hooks below.
"""

import asyncio
import logging
import time
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch
from django.conf import settings

from realtime import metrics, protocol
from realtime.fanout import LAYER_TIMEOUT
from realtime.protocol import ProtocolError
from realtime.runtime import runtime

logger = logging.getLogger("realtime.sockets")


class Refused(Exception):
    """Raised by register() to refuse a socket with a close code (4401, 4429, ...)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class SocketConsumer(AsyncWebsocketConsumer):
    """A logged-in socket served through its process's fan-out.

    Subclasses name their endpoint, the groups they join, the client frame
    types they take (mapped to methods through an explicit table, never by
    name), and what to do when the socket registers, opens and is forgotten.
    """

    endpoint: str = ""
    # What the socket is about within its endpoint (a room's slug), for logs and the subclass's rows.
    topic: str = ""
    client_types: dict[str, str] = {protocol.PING: "on_ping"}

    registered = False
    registered_at = 0.0  # time.monotonic() when the socket was registered
    joined: tuple[str, ...] = ()
    # Forwards that arrive between joining the groups and sending the initial
    # frames wait here, so that a client always gets its snapshot first.
    held: list[str] | None = None

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

    async def __call__(self, scope, receive, send) -> None:
        """Serve the socket without a channel of its own on the layer.

        AsyncConsumer.__call__ gives every consumer a layer channel and a
        receive waiting on it; here everything for the socket reaches it
        through its process (realtime/fanout.py), and its name is an address
        in the process's inbox.
        """
        self.scope = scope
        self.base_send = send
        self.channel_layer = get_channel_layer()
        current = runtime()
        self.channel_name = await current.fanout.address()
        try:
            await await_many_dispatch([receive], self.dispatch)
        except StopConsumer:
            pass
        finally:
            if self.registered:
                # Daphne cancels an instance whose socket went away without a
                # websocket.disconnect (a handshake it rejected after its connect
                # timeout while connect() ran): forget the socket all the same
                # (disconnect() finishes that even if cancelled again).
                await self.disconnect(1006)
            current.detach(self)

    # Hooks for subclasses.

    async def refusal(self) -> int | None:
        """Called before registration; return a close code to refuse the socket."""
        return None

    def groups_for(self) -> tuple[str, ...]:
        """The channel-layer groups this socket listens to."""
        return ()

    async def registering(self, user) -> None:
        """Called once the socket is in its groups: record it; raise Refused to turn it away."""

    async def opened(self) -> None:
        """Called once the socket is registered: send the initial frames."""

    async def forget(self) -> None:
        """Called once a registered socket has closed, run to its end even if Daphne cancels the socket."""
        await self.leave_groups()

    # The life of a socket.

    async def connect(self) -> None:
        """Called when the handshake arrives; close codes need an accepted socket."""
        await self.accept()
        if runtime().draining:
            # This process is shutting down: the client reconnects at once, to another one.
            await self.close_with(protocol.CLOSE_SERVICE_RESTART, "the server is restarting")
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
        except Refused as refused:
            await self.close_with(refused.code, refused.reason)
            return
        except Exception:
            logger.exception("%s socket could not be registered", self.endpoint)
            await self.close_with(protocol.CLOSE_TRY_AGAIN_LATER, "registration failed")
            return
        await self.opened()
        held, self.held = self.held, None
        for text in held:
            await self.send(text_data=text)

    async def register(self, user) -> None:
        current = runtime()
        # In the registry first, so that a session end sent as soon as the
        # subclass records the socket reaches it; then in the groups, before
        # the initial frames, so that no event between them is lost.
        current.attach(self)
        self.joined = self.groups_for()
        try:
            for group in self.joined:
                # Bounded: a hung Redis would hold the handshake for redis-py's timeouts and retries.
                await asyncio.wait_for(current.fanout.join(group, self.channel_name), LAYER_TIMEOUT)
            await self.registering(user)
        except BaseException:
            # A refused socket must not stay in the groups (disconnect() only
            # cleans up registered sockets).
            await self.leave_groups()
            current.detach(self)
            raise
        self.registered = True
        self.registered_at = time.monotonic()
        # After the first registration, as before: its join goes out before anything the jobs find.
        current.start()
        metrics.OPEN_SOCKETS.labels(self.endpoint).inc()
        logger.info("socket open", extra=self.log_fields())

    async def disconnect(self, code: int) -> None:
        """Called when the socket has closed, from either side."""
        if not self.registered:
            return
        self.registered = False
        # Nothing more goes out; the socket stays in the registry until its application ends.
        self.closing = True
        metrics.OPEN_SOCKETS.labels(self.endpoint).dec()
        metrics.SOCKETS_CLOSED.labels(self.endpoint, str(code)).inc()
        logger.info("socket closed", extra={**self.log_fields(), "code": code})
        current = runtime()
        # Daphne cancels an instance 10 s after its socket closed (its
        # application_close_timeout). When thousands of sockets close at once,
        # their clean-up can queue for longer than that: it runs in a task of
        # the runtime, which the cancel cannot cut short.
        await current.finish(self.forget())

    async def leave_groups(self) -> None:
        """Leave the socket's groups, as far as the layer lets us; membership expires anyway."""
        fanout = runtime().fanout
        for group in self.joined:
            try:
                await asyncio.wait_for(fanout.leave(group, self.channel_name), LAYER_TIMEOUT)
            except Exception:
                metrics.LAYER_ERRORS.labels("group_discard").inc()
                logger.warning("%s socket could not leave group %s", self.endpoint, group)
        self.joined = ()

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
        """Close the socket with a code the browser can read, log why (never the frame), and forget it now."""
        if self.closing:
            return
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
            "room": self.topic or None,
        }

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=protocol.dumps(frame))

    async def on_ping(self, frame: dict[str, Any]) -> None:
        await self.send_frame(protocol.pong_frame())

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Called with every message for this consumer: a forwarded frame goes straight out.

        Channels' dispatch runs close_old_connections() in the database thread
        before every handler: a thread hop for each frame a client sends, and
        for each handshake a tenth of a storm's time. Nothing here touches the
        database outside database_sync_to_async, which runs it on that thread
        before and after each call already; so the handler is called directly.
        """
        if message["type"] == protocol.EVENT_FORWARD:
            # A forward touches no database (the hop was 40% of a busy server's time: docs/benchmarks.md).
            await self.frame_forward(message)
            return
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        # One handler at a time, as Channels runs them: events from the
        # process's inbox arrive in tasks of their own (a session end must
        # not run in the middle of connect()).
        async with self.handler_lock:
            await handler(message)

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


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Any /ws/ path that matches no endpoint: accepted and closed 4404, logged in or not (never an HTTP 500)."""

    async def __call__(self, scope, receive, send) -> None:
        # No channel on the layer: nothing is ever sent to this socket, and Redis may be down.
        self.scope = scope
        self.base_send = send
        try:
            await await_many_dispatch([receive], self.dispatch)
        except StopConsumer:
            pass

    async def connect(self) -> None:
        await self.accept()
        client = self.scope.get("client") or ("-", 0)
        logger.info(
            "closing socket: code=%s reason=no such endpoint path=%r address=%s",
            protocol.CLOSE_NOT_FOUND,
            self.scope.get("path", "")[:200],
            client[0],
        )
        await self.close(code=protocol.CLOSE_NOT_FOUND)
