"""Reads that the sockets opening together share: a storm of handshakes costs a few reads, not one per socket.

A socket that registered at a moment (joined its groups, then recorded
itself) is served by any read that started after that moment: whatever
changed later reaches it live, through the groups it is already in. So one
read serves every socket registered before it started, and a socket that
registers while a read runs waits for the next one.
"""

import asyncio
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from realtime.batch import on_rounds_thread
from realtime.runtime import Runtime

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

# A read older than this serves nobody (sockets register just before they ask): it is dropped.
KEEP_SECONDS = 60.0


class SharedReads(Generic[K, T]):
    """The latest read(key) of each key, run on the rounds thread (realtime.batch), shared by the sockets it serves."""

    def __init__(self, runtime: Runtime, read: Callable[[K], T]) -> None:
        self.runtime = runtime
        self.read = read
        # key -> (time.monotonic() when the read started, what it read)
        self.latest: dict[K, tuple[float, T]] = {}
        self.reading: dict[K, asyncio.Task] = {}

    async def get(self, key: K, *, after: float) -> T:
        """What read(key) gives when it starts after `after` (a time.monotonic()), shared with other callers."""
        while True:
            found = self.latest.get(key)
            if found is not None and found[0] >= after:
                return found[1]
            task = self.reading.get(key)
            if task is None:
                task = self.reading[key] = self.runtime.spawn(self._read(key))
            # The read in flight may have started before `after`: then wait for the next one.
            await asyncio.shield(task)

    async def _read(self, key: K) -> None:
        def timed() -> tuple[float, T]:
            started = time.monotonic()
            return started, self.read(key)

        try:
            started, value = await on_rounds_thread(timed)
            self.latest[key] = (started, value)
            for old in [k for k, (at, _) in self.latest.items() if at < started - KEEP_SECONDS]:
                del self.latest[old]
        finally:
            del self.reading[key]
