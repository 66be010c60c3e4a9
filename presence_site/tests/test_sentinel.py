"""The channel layer and the cache through Redis Sentinel, across a failover."""

import asyncio
import gc
import shutil
import subprocess
import time

import pytest
import redis
from channels.layers import get_channel_layer
from django.core.cache import caches

from presence_site import settings as site
from presence_site.stack import RedisServer, free_port, stop_process, wait_for_port

MASTER = "presence"

# redis-py's Sentinel managers keep connections to the sentinels (and to a
# demoted master) that no pool disconnect closes; they are collected after the
# test's loop is gone. Only this module tolerates that.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def sentinel_set(tmp_path):
    """A master, its replica and one sentinel watching them (quorum 1), all private."""
    binary = shutil.which("redis-sentinel")
    if binary is None:
        pytest.fail("redis-sentinel is not installed (apt-get install redis-sentinel)")
    master = RedisServer(tmp_path / "master")
    master.start()
    replica = RedisServer(tmp_path / "replica", extra=["--replicaof", "127.0.0.1", str(master.port)])
    replica.start()
    port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {master.port} 1\n"
        f"sentinel down-after-milliseconds {MASTER} 1000\n"
        f"sentinel failover-timeout {MASTER} 5000\n"
    )
    sentinel = subprocess.Popen([binary, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, process=sentinel)
    client = redis.Redis(port=port, socket_timeout=2)
    wait_until(lambda: client.execute_command("SENTINEL", "REPLICAS", MASTER), "the sentinel to see the replica")
    try:
        yield {"sentinel": client, "sentinels": f"127.0.0.1:{port}", "master": master, "replica": replica}
    finally:
        stop_process(sentinel)
        replica.stop()
        master.stop()
        gc.collect()  # collect the leaked connections while this module's filter applies


def wait_until(condition, what: str, timeout: float = 20.0):
    """Poll a state that has no event to wait on (Sentinel's view), with a deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = condition()
        except (redis.RedisError, OSError):
            result = None
        if result:
            return result
        time.sleep(0.1)
    raise TimeoutError(f"waited {timeout} s for {what}")


def master_port(client: redis.Redis) -> int:
    return int(client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)[1])


async def round_trip(message: str) -> dict:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "probe.message", "text": message})
    return await asyncio.wait_for(layer.receive(channel), 5)


async def eventually(factory, timeout: float = 15.0):
    """Retry an operation that fails while clients find the new master."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await factory()
        except (redis.exceptions.RedisError, OSError, asyncio.TimeoutError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_layer_and_cache_follow_the_master_through_a_failover(sentinel_set, settings):
    settings.CHANNEL_LAYERS = site.sentinel_channel_layers(sentinel_set["sentinels"], MASTER)
    settings.CACHES = site.sentinel_caches(sentinel_set["sentinels"], MASTER)
    sentinel = sentinel_set["sentinel"]
    replica = sentinel_set["replica"]

    assert (await round_trip("before"))["text"] == "before"
    await asyncio.to_thread(caches["default"].set, "probe", "before", 60)
    assert await asyncio.to_thread(caches["default"].get, "probe") == "before"

    # Refused (NOGOODSLAVE) until the sentinel has seen the replica in sync.
    await asyncio.to_thread(
        wait_until, lambda: sentinel.execute_command("SENTINEL", "FAILOVER", MASTER), "a failover to be accepted"
    )
    await asyncio.to_thread(wait_until, lambda: master_port(sentinel) == replica.port, "the replica's promotion")
    old_master = redis.Redis(port=sentinel_set["master"].port)
    await asyncio.to_thread(
        wait_until, lambda: old_master.execute_command("ROLE")[0] == b"slave", "the old master's demotion"
    )

    assert (await eventually(lambda: round_trip("after")))["text"] == "after"
    await eventually(lambda: asyncio.to_thread(caches["default"].set, "probe", "after", 60))
    assert await asyncio.to_thread(caches["default"].get, "probe") == "after"
    # Written on the promoted replica, which is the master now.
    promoted = redis.Redis(port=replica.port)
    assert any(b"probe" in key for key in promoted.keys("*"))
    assert promoted.execute_command("ROLE")[0] == b"master"
    await get_channel_layer().close_pools()
