"""One coalescer: changes to a topic within a window become one flush, retried with backoff when it fails.

Presence diffs and room presence both use it. Each topic has its own window,
measured from when its previous flush was handed to the layer, so a slow
flush cannot bunch two together; a flush that fails puts its batch back
behind anything newer and waits the next pause of RETRY_DELAYS instead of the
window.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any

from realtime.broadcast import RETRY_DELAYS

if TYPE_CHECKING:
    from realtime.runtime import Runtime

logger = logging.getLogger(__name__)

Batch = dict[Hashable, Any]


def _replace(old: Any, new: Any) -> Any:
    return new


class _Topic:
    def __init__(self) -> None:
        self.pending: Batch = {}
        self.last_flush = float("-inf")
        self.failures = 0
        self.task: asyncio.Task | None = None
        self.flushing = False
        # One flush at a time: a change queued while one is being sent waits for it, and then for the window.
        self.lock = asyncio.Lock()


class Coalescer:
    """Batches keyed changes per topic into at most one flush(topic, batch) per window(topic).

    merge(old, new) folds a newer change of a key into the one pending (by
    default the newer replaces it). flush returns whether it was delivered.
    """

    def __init__(
        self,
        runtime: "Runtime",
        flush: Callable[[str, Batch], Awaitable[bool]],
        *,
        window: Callable[[str], float],
        merge: Callable[[Any, Any], Any] = _replace,
    ) -> None:
        self.runtime = runtime
        self.flush = flush
        self.window = window
        self.merge = merge
        self.topics: dict[str, _Topic] = {}

    def add(self, topic: str, key: Hashable, change: Any) -> None:
        """Queue a change of key in topic for the topic's next flush."""
        state = self.topics.get(topic)
        if state is None:
            state = self.topics[topic] = _Topic()
        state.pending[key] = self.merge(state.pending[key], change) if key in state.pending else change
        if state.task is None:
            state.task = self.runtime.spawn(self._flush(topic, state), failure=f"coalesced flush of {topic} failed")

    async def _flush(self, topic: str, state: _Topic) -> None:
        loop = self.runtime.loop
        async with state.lock:
            try:
                # The window runs from when the previous flush was handed over, so a slow one cannot bunch two.
                delay = state.last_flush + self.window(topic) - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            finally:
                # Changes from here on schedule the next flush.
                state.task = None
            batch, state.pending = state.pending, {}
            if not batch:
                return
            state.flushing = True
            try:
                delivered = await self.flush(topic, batch)
            except Exception:
                logger.exception("coalesced flush of %s failed", topic)
                delivered = False
            finally:
                state.flushing = False
            if delivered:
                state.failures = 0
                state.last_flush = loop.time()
                self._forget_quiet_topics()
                return
            # Put the batch back behind anything newer, and wait out a pause instead of the window.
            for key, change in batch.items():
                state.pending.setdefault(key, change)
            pause = RETRY_DELAYS[min(state.failures, len(RETRY_DELAYS) - 1)]
            state.failures += 1
            state.last_flush = loop.time() + pause - self.window(topic)
            if state.task is None:
                state.task = self.runtime.spawn(self._flush(topic, state), failure=f"coalesced flush of {topic} failed")

    def _forget_quiet_topics(self) -> None:
        """Drop topics with nothing pending whose window has passed (a room nobody is in any more)."""
        now = self.runtime.loop.time()
        quiet = [
            name
            for name, state in self.topics.items()
            if state.task is None
            and not state.flushing
            and not state.pending
            and state.last_flush < now - self.window(name)
        ]
        for name in quiet:
            del self.topics[name]
