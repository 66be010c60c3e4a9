"""Test helpers: real Redis and Daphne processes on free ports, logged-in sessions."""

import asyncio
import json
import random
import subprocess
import time
import uuid
from datetime import datetime
from pathlib import Path

from channels.testing import WebsocketCommunicator
from django.test import Client

from presence_site.stack import RedisServer, daphne_command, free_port, stop_process, wait_for_port  # noqa: F401  (re-exported for tests)

BASE_DIR = Path(__file__).resolve().parent.parent
ORIGIN = "http://localhost"

# Every WebSocket endpoint that the base consumer's protections must cover.
# The abuse tests run once per entry (see the `endpoint` fixture in conftest.py);
# an endpoint that needs something to exist first (a room) adds its set-up there.
SOCKET_ENDPOINTS = ["/ws/presence/"]


# Headless Chromium from Debian's package, with no calls home (the network is closed).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class HandshakeRefused(Exception):
    """The server refused a WebSocket handshake (HTTP 403), as for a foreign origin."""

    def __init__(self, path: str, session_key: str | None) -> None:
        super().__init__(f"handshake to {path} refused")
        self.session_key = session_key


async def close_code(communicator: WebsocketCommunicator) -> int:
    """Skip the frames still queued for the socket; return the code it was closed with."""
    while (message := await communicator.receive_output(timeout=5))["type"] != "websocket.close":
        pass
    return message["code"]


async def answers_ping(communicator: WebsocketCommunicator) -> bool:
    """True when the socket is open and answers a ping (frames queued before the pong are skipped)."""
    await communicator.send_json_to({"type": "ping"})
    while True:
        message = await communicator.receive_output(timeout=5)
        if message["type"] == "websocket.close":
            return False
        if message.get("text") == '{"type":"pong"}':
            return True


async def forgotten(user, timeout: float = 5) -> bool:
    """Wait until none of the user's sockets is registered; the server forgets one right after closing it."""
    from channels.db import database_sync_to_async

    from presence.models import Connection

    deadline = asyncio.get_running_loop().time() + timeout
    exists = database_sync_to_async(Connection.objects.filter(user=user).exists)
    while await exists():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def session_cookie(user) -> tuple[Client, str]:
    """Log user in through Django's auth (signals included); return the client and session key."""
    client = Client()
    client.force_login(user)
    return client, client.cookies["sessionid"].value


class LiveServer:
    """A Daphne process serving the real app against the test database and a shared Redis."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.env = env
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.start()

    def start(self) -> None:
        """Start Daphne on this server's port and wait until it listens."""
        self.process = subprocess.Popen(
            daphne_command(self.port),
            cwd=BASE_DIR,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, process=self.process)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def halt(self, *, crash: bool = False) -> None:
        """Stop the process (SIGTERM, or SIGKILL with crash); start() brings it back on the same port."""
        if crash:
            self.kill()
        else:
            stop_process(self.process)

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def live_cookie(user) -> str:
    """A session cookie header for a user, valid on any process sharing the database."""
    _, key = session_cookie(user)
    return f"sessionid={key}"


class LiveSocket:
    """A JSON WebSocket client for a live server, as a browser of a logged-in user would open."""

    def __init__(self, connection) -> None:
        self.connection = connection

    @classmethod
    async def open(cls, server: "LiveServer", path: str, cookie: str | None, *, origin: str | None = None):
        from websockets.asyncio.client import connect

        headers = {"Origin": origin or server.http}
        if cookie:
            headers["Cookie"] = cookie
        return cls(await connect(server.ws + path, additional_headers=headers, open_timeout=10, max_size=2**20))

    async def send(self, frame: dict) -> None:
        import json

        await self.connection.send(json.dumps(frame))

    async def receive(self, timeout: float = 5.0) -> dict:
        import asyncio
        import json

        return json.loads(await asyncio.wait_for(self.connection.recv(), timeout))

    async def receive_until(self, predicate, timeout: float = 10.0) -> list[dict]:
        """Frames received until one satisfies predicate (included), or TimeoutError."""
        import asyncio

        frames: list[dict] = []
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.receive(timeout=timeout)
                frames.append(frame)
                if predicate(frame):
                    return frames

    async def close(self) -> None:
        await self.connection.close()


class ResilientClient:
    """A client of one endpoint behind the stack's nginx that survives faults the way the pages do.

    Like static/js/socket.js it reconnects with full-jitter backoff (shorter
    than the page's, for tests) and stops on the codes that mean "do not retry";
    like chat.js it resumes a room with ?after=<last id> and resends every
    unacknowledged message with its client_id after each reconnect; like
    presence.js it replaces its view with each snapshot and applies diffs.
    The chat view is kept by id, so the view is in id order and holds each
    message once whatever order the frames came in.
    """

    NO_RETRY = {4401, 4403, 4404, 4429, 4000, 1003, 1008}
    # Error codes after which a page sends the same message again (static/js/chat.js), and after how long.
    RETRYABLE = {"rate_limited", "unavailable"}
    RETRY_AFTER = 1.0

    def __init__(
        self,
        ws_base: str,
        path: str,
        session_key: str,
        *,
        origin: str,
        name: str = "",
        backoff: float = 0.1,
        backoff_cap: float = 1.0,
        reconnect: bool = True,
    ) -> None:
        self.reconnect = reconnect
        self.ws_base = ws_base
        self.path = path
        self.headers = {"Origin": origin, "Cookie": f"sessionid={session_key}"}
        self.name = name
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        self.chat = path.startswith("/ws/chat/")
        self.opens = 0
        self.connected = False
        self.close_codes: list[int] = []  # every close the client saw, in order
        self.opened_at: list[float] = []  # time.monotonic() of each open
        self.closed_at: list[float] = []  # and of each close or failed attempt
        self.refusals: list[str] = []  # handshakes that failed (HTTP status or network error)
        # (close code, seconds from that close to the next open) for every reconnect.
        self.reconnects: list[tuple[int, float]] = []
        self.last_close: tuple[int, float] | None = None
        self.messages: dict[int, dict] = {}  # the chat view, by id
        self.complete_to: int | None = None  # every message up to this id is in the view
        self.pending: dict[str, str] = {}  # client_id -> body, sent and not yet acknowledged, in send order
        self.acked: dict[str, int] = {}  # client_id -> the id the server stored it under
        self.errors: list[dict] = []
        self.room_users: list[str] = []
        self.online: set[str] = set()  # the presence view
        # username -> server time of the newest join or leave applied, as the browser keeps it:
        # a user's leave coalesced on one process can arrive after their join on another.
        self.presence_times: dict[str, datetime] = {}
        self.leaves: list[tuple[float, str]] = []  # (time.monotonic(), username) of each leave in a diff
        self.sent_at: dict[str, float] = {}  # client_id -> when first sent
        self.arrived: dict[int, float] = {}  # message id -> when it first reached the view
        self.frames = 0
        self.changed = asyncio.Condition()
        self.connection = None
        self.stopping = False
        self.task: asyncio.Task | None = None

    @property
    def last_id(self) -> int:
        return max(self.messages, default=0)

    def url(self) -> str:
        # From the newest message of the last chat.history, not the newest seen
        # live: broadcasts from two processes can cross, and one lost in a fault
        # would leave a gap below the newest id. The view drops what it has.
        if self.chat and self.complete_to is not None:
            return f"{self.ws_base}{self.path}?after={self.complete_to}"
        return self.ws_base + self.path

    def start(self) -> "ResilientClient":
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def _run(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

        attempt = 0
        while not self.stopping:
            code = None
            try:
                # No client-side keepalive, as in a browser: the server's pings are answered.
                async with connect(
                    self.url(),
                    additional_headers=self.headers,
                    open_timeout=10,
                    ping_interval=None,
                    close_timeout=2,
                    max_size=2**22,
                ) as connection:
                    self.connection = connection
                    attempt = 0
                    async with self.changed:
                        self.opens += 1
                        self.opened_at.append(time.monotonic())
                        if self.last_close is not None:
                            self.reconnects.append((self.last_close[0], time.monotonic() - self.last_close[1]))
                            self.last_close = None
                        self.connected = True
                        self.changed.notify_all()
                    for client_id, body in list(self.pending.items()):
                        await connection.send(
                            json.dumps({"type": "chat.message", "body": body, "client_id": client_id})
                        )
                    async for text in connection:
                        await self._on_frame(json.loads(text))
                    code = connection.close_code
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd is not None else 1006
            except InvalidStatus as refused:
                self.refusals.append(str(refused.response.status_code))
            except (OSError, TimeoutError, EOFError, InvalidHandshake) as error:
                self.refusals.append(type(error).__name__)
            except asyncio.CancelledError:
                raise
            self.connection = None
            async with self.changed:
                if code is not None and not self.stopping:
                    self.close_codes.append(code)
                    self.last_close = (code, time.monotonic())
                self.closed_at.append(time.monotonic())
                self.connected = False
                self.changed.notify_all()
            if self.stopping or code in self.NO_RETRY or not self.reconnect:
                return
            await asyncio.sleep(random.uniform(0, min(self.backoff_cap, self.backoff * 2**attempt)))
            attempt += 1

    async def _on_frame(self, frame: dict) -> None:
        kind = frame.get("type")
        async with self.changed:
            self.frames += 1
            if kind == "chat.history":
                for message in frame["messages"]:
                    self._keep(message)
                self.complete_to = max([self.complete_to or 0, *(m["id"] for m in frame["messages"])])
            elif kind == "chat.message":
                self._keep(frame)
            elif kind == "room.presence":
                self.room_users = frame["users"]
            elif kind == "presence.snapshot":
                self.online = {user["username"] for user in frame["users"]}
                self.presence_times = {}
                for recent in frame.get("recent", []):
                    self._newest(recent["username"], recent["last_seen"])
                for user in frame["users"]:
                    self.presence_times.pop(user["username"], None)
                    self._newest(user["username"], user["since"])
            elif kind == "presence.diff":
                for join in frame["joins"]:
                    if self._newest(join["username"], join["since"]):
                        self.online.add(join["username"])
                for leave in frame["leaves"]:
                    if self._newest(leave["username"], leave["last_seen"]):
                        self.online.discard(leave["username"])
                        self.leaves.append((time.monotonic(), leave["username"]))
            elif kind == "error":
                self.errors.append(frame)
                if frame.get("code") in self.RETRYABLE and frame.get("client_id") in self.pending:
                    # As a page does (static/js/chat.js): the same message again after a pause, same client_id.
                    asyncio.get_running_loop().call_later(self.RETRY_AFTER, self._resend, frame["client_id"])
            self.changed.notify_all()

    def _resend(self, client_id: str) -> None:
        body = self.pending.get(client_id)
        connection = self.connection
        if body is None or connection is None:
            return  # acknowledged meanwhile, or resent on the next open

        async def send() -> None:
            try:
                await connection.send(json.dumps({"type": "chat.message", "body": body, "client_id": client_id}))
            except Exception:
                pass  # resent on the next open

        asyncio.ensure_future(send())

    def _newest(self, username: str, at: str | None) -> bool:
        """Whether a transition at this server time is not older than the newest applied (one without a time is)."""
        if not at:
            return True
        when = datetime.fromisoformat(at)
        if username in self.presence_times and self.presence_times[username] > when:
            return False
        self.presence_times[username] = when
        return True

    def _keep(self, message: dict) -> None:
        self.arrived.setdefault(message["id"], time.monotonic())
        self.messages[message["id"]] = message
        client_id = message.get("client_id")
        if client_id in self.pending and message["username"] == self.name:
            del self.pending[client_id]
            self.acked[client_id] = message["id"]

    async def send_message(self, body: str, client_id: str | None = None) -> str:
        """Queue a message until it is acknowledged; sent now if the socket is open."""
        client_id = client_id or uuid.uuid4().hex
        self.pending[client_id] = body
        self.sent_at.setdefault(client_id, time.monotonic())
        connection = self.connection
        if connection is not None:
            try:
                await connection.send(json.dumps({"type": "chat.message", "body": body, "client_id": client_id}))
            except Exception:
                pass  # resent on the next open
        return client_id

    async def send(self, frame: dict) -> bool:
        connection = self.connection
        if connection is None:
            return False
        try:
            await connection.send(json.dumps(frame))
        except Exception:
            return False
        return True

    async def wait(self, predicate, timeout: float) -> None:
        """Until predicate(self) holds, or TimeoutError."""
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: predicate(self)), timeout)

    def __repr__(self) -> str:
        return (
            f"<{self.name} {self.path} connected={self.connected} opens={self.opens} closes={self.close_codes[-5:]} "
            f"refusals={self.refusals[-3:]} pending={len(self.pending)} acked={len(self.acked)} "
            f"messages={len(self.messages)} errors={[e.get('code') for e in self.errors[-3:]]} "
            f"room={len(self.room_users)} online={len(self.online)}>"
        )

    async def close(self) -> None:
        self.stopping = True
        connection = self.connection
        if connection is not None:
            await connection.close()
        if self.task is not None:
            try:
                await asyncio.wait_for(self.task, 5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self.task.cancel()


async def wait_all(clients, predicate, timeout: float) -> None:
    """Until predicate(client) holds for every client, or TimeoutError naming how many did not get there."""
    results = await asyncio.gather(*(client.wait(predicate, timeout) for client in clients), return_exceptions=True)
    late = [client.name for client, result in zip(clients, results) if isinstance(result, BaseException)]
    if late:
        first = next(client for client, result in zip(clients, results) if isinstance(result, BaseException))
        raise TimeoutError(
            f"{len(late)} of {len(clients)} clients did not get there within {timeout} s, e.g. {first!r}"
        )
