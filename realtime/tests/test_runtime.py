"""The process runtime: one registry of open sockets, every background task, periodic jobs, a start and a stop."""

import asyncio
import logging

import pytest

from realtime import runtime as runtime_module
from realtime.runtime import Job, Runtime, runtime


class FakeSocket:
    def __init__(self, address: str) -> None:
        self.channel_name = address
        self.closed_with: list[tuple[int, str]] = []

    async def frame_forward(self, event) -> None:
        pass

    async def dispatch(self, message) -> None:
        pass

    async def close_with(self, code: int, reason: str) -> None:
        self.closed_with.append((code, reason))


@pytest.fixture
def jobs(monkeypatch):
    """The periodic jobs a runtime starts: only the ones a test declares (and the layer check)."""
    declared: dict[str, Job] = {}
    monkeypatch.setattr(runtime_module, "_jobs", declared)
    return declared


async def test_each_event_loop_has_one_runtime():
    assert runtime() is runtime()
    other = await asyncio.to_thread(lambda: asyncio.run(_runtime_of_a_new_loop()))
    assert other is not runtime()


async def _runtime_of_a_new_loop() -> Runtime:
    return runtime()


async def test_a_spawned_task_is_kept_until_it_ends_and_its_failure_logged(caplog):
    current = Runtime(asyncio.get_running_loop())
    release = asyncio.Event()

    async def work() -> None:
        await release.wait()
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="realtime.runtime"):
        task = current.spawn(work(), failure="the work failed")
        assert task in current.tasks
        release.set()
        await asyncio.wait({task})
    assert task not in current.tasks
    assert any(record.getMessage() == "the work failed" for record in caplog.records)


async def test_finish_runs_its_work_to_the_end_when_the_caller_is_cancelled():
    current = Runtime(asyncio.get_running_loop())
    started, done = asyncio.Event(), asyncio.Event()

    async def clean_up() -> None:
        started.set()
        await asyncio.sleep(0.05)
        done.set()

    caller = asyncio.create_task(current.finish(clean_up()))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.wait_for(done.wait(), 2)


async def test_finish_raises_the_failure_of_its_work():
    current = Runtime(asyncio.get_running_loop())

    async def broken() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await current.finish(broken())


async def test_start_runs_the_periodic_jobs_and_stop_ends_them(jobs, settings):
    settings.SOCKET_LAYER_CHECK_INTERVAL = 60
    rounds: list[float] = []
    two_rounds = asyncio.Event()

    async def beat(current: Runtime) -> None:
        rounds.append(asyncio.get_running_loop().time())
        if len(rounds) == 2:
            two_rounds.set()

    runtime_module.periodic(interval=lambda: 0.01)(beat)
    current = Runtime(asyncio.get_running_loop())
    assert not current.started and rounds == []
    current.start()
    assert current.started
    await asyncio.wait_for(two_rounds.wait(), 2)

    await current.stop()
    assert not current.started and current.job_tasks == {} and current.tasks == set()
    count = len(rounds)
    await asyncio.sleep(0.05)
    assert len(rounds) == count, "a stopped runtime runs no job"


async def test_a_failing_job_runs_again_at_its_next_interval(jobs, settings, caplog):
    settings.SOCKET_LAYER_CHECK_INTERVAL = 60
    calls = 0
    again = asyncio.Event()

    async def flaky(current: Runtime) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database away")
        again.set()

    runtime_module.periodic(interval=lambda: 0.01)(flaky)
    current = Runtime(asyncio.get_running_loop())
    with caplog.at_level(logging.ERROR, logger="realtime.runtime"):
        current.start()
        await asyncio.wait_for(again.wait(), 2)
    await current.stop()
    assert any("flaky failed; trying again next interval" in record.getMessage() for record in caplog.records)


async def test_stop_waits_for_work_in_flight(jobs, settings):
    settings.SOCKET_LAYER_CHECK_INTERVAL = 60
    current = Runtime(asyncio.get_running_loop())
    current.start()
    finished = asyncio.Event()

    async def leave_announced() -> None:
        await asyncio.sleep(0.05)
        finished.set()

    current.spawn(leave_announced())
    await current.stop()
    assert finished.is_set()


async def test_the_registry_holds_each_open_socket_once_and_close_all_closes_them(jobs, settings):
    settings.SOCKET_LAYER_CHECK_INTERVAL = 60
    current = Runtime(asyncio.get_running_loop())
    first, second = FakeSocket("inbox#1"), FakeSocket("inbox#2")
    current.attach(first)
    current.attach(second)
    current.attach(first)
    assert current.sockets == {"inbox#1": first, "inbox#2": second}

    await current.close_all(4503, "the channel layer's Redis restarted")
    await asyncio.wait(current.tasks - set(current.job_tasks.values()))
    assert first.closed_with == second.closed_with == [(4503, "the channel layer's Redis restarted")]

    current.detach(first)
    current.detach(first)
    assert current.sockets == {"inbox#2": second}
    await current.stop()


async def test_local_state_is_made_once_per_runtime():
    current = Runtime(asyncio.get_running_loop())

    class Hub:
        def __init__(self, owner: Runtime) -> None:
            self.owner = owner

    assert current.local(Hub) is current.local(Hub)
    assert current.local(Hub).owner is current
    assert Runtime(asyncio.get_running_loop()).local(Hub) is not current.local(Hub)


async def test_shutdown_closes_every_socket_with_1012_over_the_drain_then_runs_the_stop_hooks(
    jobs, settings, monkeypatch
):
    settings.SOCKET_LAYER_CHECK_INTERVAL = 60
    hooks = {}
    monkeypatch.setattr(runtime_module, "_stop_hooks", hooks)
    current = Runtime(asyncio.get_running_loop())
    sockets = [FakeSocket(f"inbox#{n}") for n in range(20)]
    closed_at: list[float] = []
    forgotten: list[str] = []

    async def close_with(socket: FakeSocket, code: int, reason: str) -> None:
        socket.closed_with.append((code, reason))
        closed_at.append(asyncio.get_running_loop().time())

        async def forget() -> None:  # what a closed socket's clean-up does: it takes a while
            await asyncio.sleep(0.05)
            forgotten.append(socket.channel_name)

        current.spawn(forget())

    for socket in sockets:
        socket.close_with = lambda code, reason, socket=socket: close_with(socket, code, reason)
        current.attach(socket)

    async def hook(runtime: Runtime) -> None:
        hooks_saw.append(len(forgotten))

    hooks_saw: list[int] = []
    hooks["test"] = hook
    listening = [True]
    await current.shutdown(drain=0.5, stop_listening=lambda: listening.clear())

    assert not listening and current.draining
    assert all(socket.closed_with == [(1012, "the server is restarting")] for socket in sockets)
    assert 0.3 < closed_at[-1] - closed_at[0] < 0.9, "spread over the drain, not all at once"
    assert hooks_saw == [20], "the hooks run once every closed socket is forgotten"
    assert current.tasks == set() and not current.started


async def test_a_busy_event_loop_is_not_mistaken_for_a_hung_redis(monkeypatch):
    from realtime import layer

    current = Runtime(asyncio.get_running_loop())
    closed: list[str] = []

    async def no_answer() -> None:
        return None

    async def close_all(code: int, reason: str) -> None:
        closed.append(reason)

    monkeypatch.setattr(layer, "layer_epoch", no_answer)
    monkeypatch.setattr(current, "close_all", close_all)
    current.sockets["inbox#1"] = FakeSocket("inbox#1")
    busy = [True]

    async def lag() -> float:
        return 1.0 if busy[0] else 0.0

    monkeypatch.setattr(layer, "loop_lag", lag)
    for _ in range(3):
        await current.layer.check(current)
    assert closed == [] and current.layer.failures == 0

    busy[0] = False
    await current.layer.check(current)
    assert closed == []
    await current.layer.check(current)
    assert closed == ["the channel layer does not answer"]
