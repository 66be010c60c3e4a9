"""The process runtime: this process's open sockets, its background tasks and periodic jobs, with a start and a stop.

One Runtime per event loop: a process serves its sockets on one loop, and
tests run a loop each. Nothing here is shared state: it holds only this
process's own sockets and work; what every process must see lives in the
database or Redis.

Apps add their periodic work with @periodic (registered at import, from their
AppConfig.ready()) and keep per-process state with Runtime.local(), so that
every task of the process is started, kept and stopped in one place.
"""

import asyncio
import logging
import os
import socket
import uuid
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

# This process, as its rows in shared storage name it.
SERVER_ID = f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Socket(Protocol):
    """What the runtime and the fan-out need of an open socket (realtime.consumers.SocketConsumer)."""

    channel_name: str

    async def frame_forward(self, event: dict[str, Any]) -> None: ...

    async def dispatch(self, message: dict[str, Any]) -> None: ...

    async def close_with(self, code: int, reason: str) -> None: ...


@dataclass(frozen=True)
class Job:
    name: str
    run: Callable[["Runtime"], Awaitable[None]]
    interval: Callable[[], float]
    wait_first: bool


# Code, not state: the periodic jobs that apps declare at import.
_jobs: dict[str, Job] = {}


def periodic(*, interval: Callable[[], float], wait_first: bool = False):
    """Declare an async job(runtime) that every started runtime runs every interval() seconds.

    A failing round is logged and the job runs again at its next interval.
    """

    def register(run: Callable[["Runtime"], Awaitable[None]]):
        name = f"{run.__module__}.{run.__qualname__}"
        _jobs[name] = Job(name=name, run=run, interval=interval, wait_first=wait_first)
        return run

    return register


class Runtime:
    """This process's open sockets (one registry), background tasks and periodic jobs (one event loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        from realtime.fanout import Fanout
        from realtime.layer import LayerHealth

        self.loop = loop
        # The one registry of this process's open sockets, by address.
        self.sockets: dict[str, Socket] = {}
        # Every background task of the process, held until it ends (the loop keeps only a weak reference).
        self.tasks: set[asyncio.Task] = set()
        self.job_tasks: dict[str, asyncio.Task] = {}
        self.started = False
        self.stopping = False
        self.locals: dict[Callable, Any] = {}
        self.fanout = Fanout(self)
        self.layer = LayerHealth(self)

    def local(self, factory: Callable[["Runtime"], T]) -> T:
        """The process's one instance of an app's per-process state, made by factory(runtime) on first use."""
        found = self.locals.get(factory)
        if found is None:
            found = self.locals[factory] = factory(self)
        return found

    def spawn(self, work: Coroutine[Any, Any, Any], *, failure: str | None = None) -> asyncio.Task:
        """Run work in a background task kept by the runtime until it ends.

        With `failure`, an exception it ends with is logged under that message;
        without, it is left for whoever awaits the task.
        """
        task = self.loop.create_task(work)
        self.tasks.add(task)

        def done(task: asyncio.Task) -> None:
            self.tasks.discard(task)
            if failure is not None and not task.cancelled() and task.exception() is not None:
                logger.error(failure, exc_info=task.exception())

        task.add_done_callback(done)
        return task

    async def finish(self, work: Coroutine[Any, Any, None]) -> None:
        """Run work to its end even if the caller is cancelled; the caller waits for it, and its failure, otherwise."""
        task = self.spawn(work)
        # Unlike awaiting the task, asyncio.wait leaves it running when the caller is cancelled;
        # a failure nobody waits for any more is logged by asyncio ("exception was never retrieved").
        await asyncio.wait({task})
        task.result()

    def start(self) -> None:
        """Start the periodic jobs (the first registered socket does it; starting twice does nothing)."""
        if self.started or self.stopping:
            return
        self.started = True
        for job in [self.layer.job, *_jobs.values()]:
            self.job_tasks[job.name] = self.spawn(self._repeat(job), failure=f"periodic job {job.name} stopped")

    async def _repeat(self, job: Job) -> None:
        if job.wait_first:
            await asyncio.sleep(job.interval())
        while True:
            try:
                await job.run(self)
            except Exception:
                logger.exception("%s failed; trying again next interval", job.name)
            await asyncio.sleep(job.interval())

    async def stop(self, *, timeout: float = 5.0) -> None:
        """Stop the periodic jobs and the fan-out's receives; wait for the rest of the work, at most timeout seconds."""
        self.stopping = True
        for task in self.job_tasks.values():
            task.cancel()
        self.job_tasks.clear()
        self.fanout.stop()
        pending = {task for task in self.tasks if task is not asyncio.current_task()}
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout)
            for task in late:
                task.cancel()
        self.started = False

    def attach(self, socket: Socket) -> None:
        """Count a socket as open here: the fan-out delivers to it from now on."""
        self.sockets[socket.channel_name] = socket
        self.fanout.socket_attached()

    def detach(self, socket: Socket) -> None:
        """Forget a socket; the last one stops the inbox's receive."""
        if self.sockets.get(socket.channel_name) is socket:
            del self.sockets[socket.channel_name]
        self.fanout.socket_detached()

    async def close_all(self, code: int, reason: str) -> None:
        """Close every open socket of this process with code, through the common close path."""
        for socket_ in list(self.sockets.values()):
            try:
                await socket_.close_with(code, reason)
            except Exception:
                logger.exception("a socket could not be closed (%s)", reason)


_runtimes: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Runtime]" = weakref.WeakKeyDictionary()


def runtime() -> Runtime:
    """The running event loop's runtime, made on first use."""
    loop = asyncio.get_running_loop()
    found = _runtimes.get(loop)
    if found is None:
        found = _runtimes[loop] = Runtime(loop)
    return found
