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
import math
import os
import socket
import uuid
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from realtime import protocol

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


# Code, not state: the periodic jobs and the stop hooks that apps declare at import.
_jobs: dict[str, Job] = {}
_stop_hooks: dict[str, Callable[["Runtime"], Awaitable[None]]] = {}


def periodic(*, interval: Callable[[], float], wait_first: bool = False):
    """Declare an async job(runtime) that every started runtime runs every interval() seconds.

    A failing round is logged and the job runs again at its next interval.
    """

    def register(run: Callable[["Runtime"], Awaitable[None]]):
        name = f"{run.__module__}.{run.__qualname__}"
        _jobs[name] = Job(name=name, run=run, interval=interval, wait_first=wait_first)
        return run

    return register


def on_stop(hook: Callable[["Runtime"], Awaitable[None]]):
    """Declare an async hook(runtime) that a stopping runtime runs once its sockets are closed (leave no rows)."""
    _stop_hooks[f"{hook.__module__}.{hook.__qualname__}"] = hook
    return hook


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
        # Set on SIGTERM (shutdown()): new sockets are turned away with 1012.
        self.draining = False
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
        """Stop the periodic jobs and the fan-out's receives, run the stop hooks, and wait for the rest of the work.

        Work started while waiting (a diff a closing socket published) is
        waited for too; whatever is still running after timeout seconds is
        cancelled.
        """
        self.stopping = True
        for task in self.job_tasks.values():
            task.cancel()
        self.job_tasks.clear()
        self.fanout.stop()
        deadline = self.loop.time() + timeout
        # The hooks run once closed sockets are forgotten: a hook that ran first
        # would find their rows and skip their users' leave grace.
        await self._settle(deadline)
        for name, hook in _stop_hooks.items():
            try:
                await asyncio.wait_for(hook(self), max(0.1, deadline - self.loop.time()))
            except Exception:
                logger.exception("stop hook %s failed", name)
        await self._settle(deadline, cancel_late=True)
        self.started = False

    async def _settle(self, deadline: float, *, cancel_late: bool = False) -> None:
        """Wait until no task of the runtime runs (new ones included), or the deadline."""
        while pending := {task for task in self.tasks if task is not asyncio.current_task()}:
            left = deadline - self.loop.time()
            if left <= 0:
                if cancel_late:
                    for task in pending:
                        task.cancel()
                return
            await asyncio.wait(pending, timeout=left)

    async def shutdown(self, *, drain: float, stop_listening: Callable[[], None] | None = None) -> None:
        """Leave without a flicker: take no new sockets, close the open ones with 1012 over `drain` seconds, stop.

        Each client reconnects at once, to another process behind the load
        balancer, within its user's leave grace, so nobody is announced as
        gone; what this process still holds (leaves of users who did not come
        back, diffs, broadcasts being retried) goes out before stop() returns.
        """
        self.draining = True
        if stop_listening is not None:
            stop_listening()
        sockets = list(self.sockets.values())
        logger.warning("shutting down: closing %d sockets over %.1f s", len(sockets), drain)
        step = 0.05
        per_step = max(1, math.ceil(len(sockets) * step / drain)) if drain > 0 else len(sockets) or 1
        for start in range(0, len(sockets), per_step):
            for socket_ in sockets[start : start + per_step]:
                self.spawn(
                    socket_.close_with(protocol.CLOSE_SERVICE_RESTART, "the server is restarting"),
                    failure="a socket could not be closed (restart)",
                )
            if start + per_step < len(sockets):
                await asyncio.sleep(step)
        # Closed sockets are still being forgotten (a leave waits out its grace, a diff its window).
        await self.stop(timeout=10.0)
        logger.warning("shut down: every socket closed")

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
        """Close every open socket of this process with code, through the common close path, all at once.

        Each close runs in its own task: a socket's clean-up waits out its
        user's leave grace and the layer (hung, when this is called because of
        it), and one after the other they took minutes.
        """
        for socket_ in list(self.sockets.values()):
            self.spawn(socket_.close_with(code, reason), failure=f"a socket could not be closed ({reason})")


_runtimes: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Runtime]" = weakref.WeakKeyDictionary()


def runtime() -> Runtime:
    """The running event loop's runtime, made on first use."""
    loop = asyncio.get_running_loop()
    found = _runtimes.get(loop)
    if found is None:
        found = _runtimes[loop] = Runtime(loop)
    return found
