"""Work that many sockets ask for at once, done once per round: on the database thread, or on the channel layer.

A storm of handshakes (every client reconnecting after a deploy) asks the
database the same kind of question once per socket: whose session is this,
record this socket. Each question alone costs a hop to the database thread,
a transaction and a few round trips; asked together they cost one of each.

A Batch queues the items its callers submit. While no round runs, a
submission starts one; a round takes every item queued by the time the
database thread gets to it (up to `limit`), hands them to the handler in one
call on that thread, and answers each caller with its own result. Items
submitted while a round runs wait for the next one, so the window is
exactly as long as the database is busy: a lone handshake waits for nothing,
and a storm's rounds grow with it.

A coroutine handler (channel-layer work: the groups a storm of sockets joins)
runs on the event loop instead, with the items queued when its round starts.

Rounds (and the shared reads of realtime.shared) run on a database thread of
their own, beside the one Channels gives every other database call: in a
reconnect storm the chat messages of a busy room kept that thread full, and
handshakes queued behind them past the leave grace, so users who were only
moving to another process were announced as gone.
"""

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Generic, TypeVar

from django.db import close_old_connections

if TYPE_CHECKING:
    from realtime.runtime import Runtime

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Items handled in one round at most: a round holds one transaction, and the last item's wait grows with it.
BATCH_LIMIT = 200

# The process's thread for rounds and shared reads (Django gives it a database connection of its own).
ROUNDS_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rounds")


async def on_rounds_thread(function: Callable[[], R]) -> R:
    """Run function() on the rounds thread, closing stale database connections around it as Channels does."""

    def call() -> R:
        close_old_connections()
        try:
            return function()
        finally:
            close_old_connections()

    return await asyncio.get_running_loop().run_in_executor(ROUNDS_THREAD, call)


class Batch(Generic[T, R]):
    """Items from many callers, handled together by handler(items) -> [result or exception per item].

    `abandoned(item, result)`, if given, is called (on the event loop) with
    the result of an item whose caller was cancelled after the round took it:
    what the handler did for it (a row written) has nobody left to undo it.
    """

    def __init__(
        self,
        runtime: "Runtime",
        handler: Callable[[list[T]], list[R | Exception]] | Callable[[list[T]], Awaitable[list[R | Exception]]],
        *,
        name: str,
        limit: int = BATCH_LIMIT,
        abandoned: Callable[[T, R], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.handler = handler
        self.name = name
        self.limit = limit
        self.abandoned = abandoned
        # Appended on the loop, taken on the database thread: deque's append and popleft are atomic.
        self.queue: deque[tuple[T, asyncio.Future]] = deque()
        self.task: asyncio.Task | None = None

    async def submit(self, item: T) -> R:
        """The item's result, or its exception, once a round has handled it."""
        future = self.runtime.loop.create_future()
        self.queue.append((item, future))
        if self.task is None:
            self.task = self.runtime.spawn(self._rounds(), failure=f"{self.name} rounds stopped")
        return await future

    async def _rounds(self) -> None:
        taken: list[tuple[T, asyncio.Future]] = []
        try:
            while self.queue:
                taken = []
                started = self.runtime.loop.time()
                try:
                    if inspect.iscoroutinefunction(self.handler):
                        self._take(taken)
                        results = await self.handler([item for item, _ in taken]) if taken else []
                    else:
                        results = await on_rounds_thread(lambda: self._round(taken))
                    if len(results) != len(taken):
                        raise RuntimeError(f"{len(results)} results for {len(taken)} items")
                except Exception as error:
                    logger.warning("%s: a round of %d failed (%s)", self.name, len(taken), error)
                    results = [error] * len(taken)
                for (item, future), result in zip(taken, results):
                    self._answer(item, future, result)
                logger.debug(
                    "%s: a round of %d took %.3f s; %d queued behind it",
                    self.name,
                    len(taken),
                    self.runtime.loop.time() - started,
                    len(self.queue),
                )
                taken = []
        finally:
            self.task = None
            # Anything unanswered (the task was cancelled: the runtime is stopping) gets an answer all the same.
            for _, future in [*taken, *self.queue]:
                if not future.done():
                    future.set_exception(RuntimeError(f"{self.name} stopped"))
            self.queue.clear()

    def _round(self, taken: list[tuple[T, asyncio.Future]]) -> list[R | Exception]:
        """On the database thread: take what is queued now (callers still waiting) and handle it in one call."""
        if not self._take(taken):
            return []
        return self.handler([item for item, _ in taken])

    def _take(self, taken: list[tuple[T, asyncio.Future]]) -> list[tuple[T, asyncio.Future]]:
        while len(taken) < self.limit:
            try:
                entry = self.queue.popleft()
            except IndexError:
                break
            # A caller cancelled before the round took its item asked for nothing.
            if not entry[1].cancelled():
                taken.append(entry)
        return taken

    def _answer(self, item: T, future: asyncio.Future, result: R | Exception) -> None:
        if future.cancelled():
            if self.abandoned is not None and not isinstance(result, Exception):
                self.abandoned(item, result)
            return
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)


def each(function: Callable[[T], R]) -> Callable[[list[T]], list[R | Exception]]:
    """A round handler that calls function(item) for each item in turn: one hop to the thread for the round.

    Each call keeps its own transaction (if it opens one), so one item's
    locks are never held while another's are taken.
    """

    def handle(items: list[T]) -> list[R | Exception]:
        results: list[R | Exception] = []
        for item in items:
            try:
                results.append(function(item))
            except Exception as error:
                results.append(error)
        return results

    return handle
