"""Test helpers: real Redis and Daphne processes on free ports, logged-in sessions."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

BASE_DIR = Path(__file__).resolve().parent.parent
ORIGIN = "http://localhost"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, *, process: subprocess.Popen | None = None, timeout: float = 20.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:port, or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} within {timeout} s")


def stop_process(process: subprocess.Popen, *, timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


class RedisServer:
    """A private redis-server on a free port, which tests may stop and start again."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: the Redis tests need a real Redis (apt-get install redis-server)")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--logfile", str(self.directory / "redis.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, process=self.process)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


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
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
             "--websocket_timeout", "86400", "--ping-interval", "20", "--ping-timeout", "30",
             "--websocket-max-message-size", "1048576", "presence_site.asgi:application"],
            cwd=BASE_DIR,
            env=env,
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
