"""One object per event loop: the registries that hold a process's own sockets."""

import asyncio
import weakref
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


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
