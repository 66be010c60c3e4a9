"""Fixtures shared by every app's tests: real Redis, real Daphne processes, logged-in sockets."""

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from presence_site.testing import (
    ORIGIN,
    SOCKET_ENDPOINTS,
    HandshakeRefused,
    LiveServer,
    RedisServer,
    session_cookie,
)
from realtime.batch import on_rounds_thread

BASE_DIR = Path(__file__).resolve().parent


def pytest_configure(config) -> None:
    (BASE_DIR / "var").mkdir(exist_ok=True)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker) -> Iterator[None]:
    """Drop the test database even if a worker thread still holds a connection to it."""
    yield
    with django_db_blocker.unblock():
        from django.db import connection

        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )


# `make screenshots` sets this to refresh the committed screenshots in docs/img/.
REFRESH_SCREENSHOTS = "REFRESH_SCREENSHOTS"


@pytest.fixture
def screenshot_dir(tmp_path) -> Path:
    """Where a test saves its screenshots: docs/img/ for `make screenshots`, else a temporary folder.

    The screenshots are taken either way (a page that fails to render fails the
    test), but only the command that asks for them rewrites the committed files,
    so that a test run leaves the working tree as it found it.
    """
    if os.environ.get(REFRESH_SCREENSHOTS) == "1":
        folder = BASE_DIR / "docs" / "img"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return tmp_path


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """REDIS_URL when given, else a private redis-server for this test run."""
    given = os.environ.get("REDIS_URL")
    if given:
        yield given
        return
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
    except RuntimeError as missing:
        pytest.fail(f"the Redis tests need a real Redis: {missing}")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def quick_presence(settings) -> None:
    """Short timings so that presence tests finish in seconds; tests that need others set them."""
    settings.PRESENCE_LEAVE_GRACE = 0
    settings.PRESENCE_COALESCE_WINDOW = 0.05
    settings.CHAT_PRESENCE_WINDOW = 0
    settings.PRESENCE_TTL = 30
    settings.PRESENCE_HEARTBEAT_INTERVAL = 5


@pytest.fixture(params=["memory", "redis"])
def layer(request, settings) -> Iterator[str]:
    """Run a test once on the in-memory channel layer and once on channels-redis with a real Redis."""
    from presence_site import settings as site

    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        settings.CHANNEL_LAYERS = site.redis_channel_layers(url)
        settings.CACHES = site.redis_caches(url)
    else:
        settings.CHANNEL_LAYERS = site.MEMORY_CHANNEL_LAYERS
        settings.CACHES = site.MEMORY_CACHES
    yield request.param
    if request.param == "redis":
        import redis

        # Leave no groups or channels behind for the next test.
        redis.Redis.from_url(request.getfixturevalue("redis_url")).flushdb()


@pytest.fixture(scope="session")
def password_hashes() -> dict[str, str]:
    """Hashing a password costs about 0.3 s by design: hash each test password once per run."""
    return {}


CHAT_ENDPOINT = "/ws/chat/hostile-input/"


@pytest.fixture(params=[*SOCKET_ENDPOINTS, CHAT_ENDPOINT])
def endpoint(request) -> str:
    """Each WebSocket endpoint path in turn, for tests of what every socket must withstand."""
    if request.param == CHAT_ENDPOINT:
        from chat.models import Room

        request.getfixturevalue("transactional_db")
        Room.objects.get_or_create(slug="hostile-input", defaults={"title": "Hostile input"})
    return request.param


@pytest.fixture
def make_user(django_user_model, password_hashes) -> Callable:
    def make(username: str, *, password: str = "correct-horse-battery-9", **extra):
        from django.contrib.auth.hashers import make_password

        if password not in password_hashes:
            password_hashes[password] = make_password(password)
        return django_user_model.objects.create(username=username, password=password_hashes[password], **extra)

    return make


@pytest.fixture
async def open_socket() -> AsyncIterator[Callable]:
    """Open a WebSocket through the full ASGI application, as a browser of a logged-in user would.

    Returns (communicator, client, session_key); every socket still open is closed at teardown.
    A handshake the server refuses (HTTP 403) raises HandshakeRefused.
    """
    from presence_site.asgi import application

    opened: list[WebsocketCommunicator] = []

    async def open_(
        path: str,
        user=None,
        *,
        session_key: str | None = None,
        client: Client | None = None,
        origin: str | None = ORIGIN,
        address: tuple[str, int] | None = None,
    ):
        if user is not None and session_key is None:
            client, session_key = await database_sync_to_async(session_cookie)(user)
        headers = []
        if session_key:
            headers.append((b"cookie", f"sessionid={session_key}".encode()))
        if origin is not None:
            headers.append((b"origin", origin.encode()))
        communicator = WebsocketCommunicator(application, path, headers=headers)
        if address is not None:
            communicator.scope["client"] = address
        connected, _ = await communicator.connect(timeout=5)
        opened.append(communicator)  # refused too: its application still runs until teardown
        if not connected:
            raise HandshakeRefused(path, session_key)
        return communicator, client, session_key

    yield open_
    for communicator in opened:
        if not communicator.future.cancelled():  # a test may play the server giving up on one
            await communicator.disconnect()
    await quiesce()


async def quiesce() -> None:
    """Stop what the sockets left running on this loop, and let the database thread finish its query.

    Their background work (heartbeats, session checks, a presence diff or a
    room's list being published) queries the database in asgiref's one thread
    for sync code. A query still running there when the test database is
    flushed can deadlock with PostgreSQL's TRUNCATE, which then fails and
    leaves the test's rows behind for the next test.
    """
    others = asyncio.all_tasks() - {asyncio.current_task()}
    for task in others:
        task.cancel()
    if others:
        _, stuck = await asyncio.wait(others, timeout=5)
        assert not stuck, f"tasks that ignore cancellation: {stuck}"
    # Each thread runs its calls in order: these run once the last query of each has finished.
    await database_sync_to_async(lambda: None)()
    await on_rounds_thread(lambda: None)


@pytest.fixture
def live_env(transactional_db, redis_url) -> dict[str, str]:
    """The environment a Daphne process needs to serve the test database through the test Redis."""
    from django.db import connection

    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST")}
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        env["SQLITE_PATH"] = str(db["NAME"])
        env.pop("DATABASE_URL", None)
    else:
        auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        env["DATABASE_URL"] = f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"
    env.update(
        DJANGO_SETTINGS_MODULE="presence_site.settings",
        REDIS_URL=redis_url,
        PRESENCE_TTL="4",
        PRESENCE_HEARTBEAT_INTERVAL="1",
        PRESENCE_LEAVE_GRACE="0.3",
        PRESENCE_COALESCE_WINDOW="0.1",
        LOG_LEVEL="WARNING",
    )
    return env


@pytest.fixture
def live_server_factory(live_env, tmp_path) -> Iterator[Callable[..., LiveServer]]:
    """Start Daphne processes on free ports; all of them are stopped at teardown."""
    servers: list[LiveServer] = []

    def start(**overrides: str) -> LiveServer:
        server = LiveServer({**live_env, **overrides}, tmp_path / f"daphne-{len(servers)}.log")
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
