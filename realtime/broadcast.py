"""One broadcast(): how every sender, async or sync, hands a frame to a group, with the same bounded retry."""

import asyncio
import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from realtime import metrics, protocol
from realtime.fanout import LAYER_TIMEOUT
from realtime.runtime import runtime

logger = logging.getLogger(__name__)

# When a broadcast fails, it is sent again after these pauses (seconds).
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)


async def send_once(group: str, event: dict[str, Any], *, label: str) -> bool:
    """Send an event to a group once, bounded by LAYER_TIMEOUT; a failure is counted and logged, not raised."""
    try:
        await asyncio.wait_for(get_channel_layer().group_send(group, event), LAYER_TIMEOUT)
    except Exception as error:
        metrics.LAYER_ERRORS.labels(label).inc()
        logger.warning("%s broadcast to %s failed (%s)", label, group, type(error).__name__)
        return False
    return True


async def _resend(group: str, event: dict[str, Any], label: str) -> bool:
    for delay in RETRY_DELAYS:
        await asyncio.sleep(delay)
        if await send_once(group, event, label=label):
            return True
    logger.error("%s broadcast to %s given up after %d tries", label, group, len(RETRY_DELAYS) + 1)
    return False


async def broadcast(
    group: str, frame: dict[str, Any], *, label: str, skip: str | None = None, retry: bool = True
) -> bool:
    """Send a frame, serialized once, to every socket in a group (but `skip`); True when the layer took it now.

    A stored thing is sent again if the layer fails: sockets that reconnected
    while it was failing have already resumed from the database past what was
    stored before they came back, so what is stored after that reaches them
    only by broadcast. Receivers drop repeats by id. The retry runs in the
    background on a serving process; where no runtime serves sockets (a
    management command, a sync test) the caller waits for it instead, since
    a temporary event loop would cancel it. retry=False is for hints (typing)
    whose loss costs nothing.
    """
    event = protocol.forward_event(frame, group=group, skip=skip)
    current = runtime()
    current.fanout.counted(group, event)
    if await send_once(group, event, label=label):
        return True
    if retry:
        if current.started:
            current.spawn(_resend(group, event, label), failure=f"{label} broadcast to {group} failed")
        else:
            await _resend(group, event, label)
    return False


def broadcast_sync(group: str, frame: dict[str, Any], *, label: str) -> bool:
    """broadcast() for sync code: views, signals, the admin, transaction.on_commit callbacks."""
    if get_channel_layer() is None:
        return False
    return async_to_sync(broadcast)(group, frame, label=label)
