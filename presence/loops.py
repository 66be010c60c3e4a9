"""One object per event loop: the registries that hold a process's own sockets; the tasks they keep."""

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

logger = logging.getLogger(__name__)


def per_loop(factory: Callable[[asyncio.AbstractEventLoop], T]) -> Callable[[], T]:
    """A getter for the running loop's instance, made by factory(loop) on first use.

    A process serves its sockets on one loop; tests run a loop each, and an
    instance goes with its loop.
    """
    instances: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()

    def get() -> T:
        loop = asyncio.get_running_loop()
        found = instances.get(loop)
        if found is None:
            found = instances[loop] = factory(loop)
        return found

    return get


def keep(tasks: set[asyncio.Task], task: asyncio.Task, failure: str | None = None) -> asyncio.Task:
    """Hold a background task in `tasks` until it ends: the event loop keeps only a weak reference.

    With `failure`, an exception it ends with is logged under that message;
    without, it is left for whoever awaits the task.
    """
    tasks.add(task)

    def done(task: asyncio.Task) -> None:
        tasks.discard(task)
        if failure is not None and not task.cancelled() and task.exception() is not None:
            logger.error(failure, exc_info=task.exception())

    task.add_done_callback(done)
    return task
