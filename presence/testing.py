"""Test helpers: real Redis and Daphne processes on free ports, logged-in sessions."""

import subprocess
import sys
import time
from pathlib import Path

from channels.testing import WebsocketCommunicator
from django.test import Client

from presence_site.stack import RedisServer, free_port, stop_process, wait_for_port  # noqa: F401  (re-exported for tests)

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


def session_cookie(user) -> tuple[Client, str]:
    """Log user in through Django's auth (signals included); return the client and session key."""
    client = Client()
    client.force_login(user)
    return client, client.cookies["sessionid"].value


async def close_all(*communicators: WebsocketCommunicator) -> None:
    for communicator in communicators:
        await communicator.disconnect()


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
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
             "--websocket_timeout", "86400", "--ping-interval", "20", "--ping-timeout", "30",
             "--websocket-max-message-size", "65536", "presence_site.asgi:application"],
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
