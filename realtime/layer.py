"""Layer health: the one place that notices a lost or restarted channel layer, and what the process does then.

Two signs reach it: the periodic check of the Redis servers' run ids (down,
hung, or restarted under us), and a receive of the process's inbox that
fails. Either way every socket of the process is closed with 4503, so that
each client reconnects, joins its groups again and resyncs from the database.
"""

import asyncio
import logging
from typing import TYPE_CHECKING

from channels.layers import get_channel_layer
from django.conf import settings

from realtime import metrics, protocol

if TYPE_CHECKING:
    from realtime.runtime import Runtime

logger = logging.getLogger(__name__)

# Seconds the check waits for Redis to say who it is.
LAYER_CHECK_TIMEOUT = 2.0
# A turn of the event loop slower than this means the process itself is too busy (a storm of handshakes) for a
# slow answer to say anything about Redis: such a round counts neither as a failure nor as a success.
LOOP_BUSY = 0.25


async def loop_lag() -> float:
    """How long one turn of the running event loop takes now (the ready callbacks ahead of ours)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.sleep(0)
    return loop.time() - started


async def layer_epoch() -> tuple | None:
    """The run ids of the channel layer's Redis servers (they change when one restarts); None if one does not answer."""
    layer = get_channel_layer()
    if layer is None or not hasattr(layer, "ring_size") or not hasattr(layer, "connection"):
        return ()  # the in-memory layer lives and dies with the process: nothing to watch
    try:
        ids = []
        for index in range(layer.ring_size):
            info = await asyncio.wait_for(layer.connection(index).info("server"), LAYER_CHECK_TIMEOUT)
            ids.append(info.get("run_id"))
    except Exception:
        return None  # unreachable now: compared again once it answers
    return tuple(ids)


class LayerHealth:
    """Watches the channel layer for one process."""

    def __init__(self, runtime: "Runtime") -> None:
        from realtime.runtime import Job

        self.runtime = runtime
        self.epoch: tuple | None = None
        self.failures = 0
        self.job = Job(
            name="realtime.layer.check",
            run=self.check,
            interval=lambda: settings.SOCKET_LAYER_CHECK_INTERVAL,
            wait_first=False,
        )

    async def check(self, runtime: "Runtime") -> None:
        """Called every SOCKET_LAYER_CHECK_INTERVAL: close the sockets when Redis is unreachable or restarted.

        A restarted Redis has forgotten every group: a socket whose receive
        survived the restart (redis-py reconnects on its own) would stay open
        and hear nothing.
        """
        epoch = await layer_epoch()
        if epoch is None:
            if await loop_lag() > LOOP_BUSY:
                # Our own loop is saturated: the answer may be waiting behind a storm of handshakes. Closing every
                # socket now would turn a busy minute into a reconnect storm.
                logger.info("the channel layer check timed out on a busy event loop; not counted")
                return
            # Down or hung: a receive may wait for redis-py's timeouts and
            # retries, far longer than a client should sit deaf. Two checks in
            # a row is the bound (at most two intervals and 2 s).
            self.failures += 1
            if self.failures == 2:
                metrics.LAYER_ERRORS.labels("unreachable").inc()
                await self.lost("the channel layer does not answer")
            return
        self.failures = 0
        previous, self.epoch = self.epoch, epoch
        if previous is None or previous == epoch:
            return
        metrics.LAYER_ERRORS.labels("restarted").inc()
        await self.runtime.fanout.renew()
        await self.lost("the channel layer's Redis restarted")

    async def lost(self, reason: str) -> None:
        """Close every socket of this process with 4503, so that each client reconnects and resyncs."""
        if not self.runtime.sockets:
            return
        logger.warning("%s; closing %d sockets so that they resync", reason, len(self.runtime.sockets))
        await self.runtime.close_all(protocol.CLOSE_TRY_AGAIN_LATER, reason)
