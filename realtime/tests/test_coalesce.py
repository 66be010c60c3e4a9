"""The one coalescer: presence diffs and room presence batch through it."""

import asyncio

from realtime.coalesce import Coalescer
from realtime.runtime import Runtime


def recorder(results: list[bool] | None = None):
    """A flush that records its batches and answers from results (delivered when empty)."""
    flushed: list[tuple[str, dict]] = []
    arrived = asyncio.Condition()

    async def flush(topic: str, batch: dict) -> bool:
        async with arrived:
            flushed.append((topic, dict(batch)))
            arrived.notify_all()
        return results.pop(0) if results else True

    async def wait_for(count: int) -> None:
        async with arrived:
            await asyncio.wait_for(arrived.wait_for(lambda: len(flushed) >= count), 3)

    return flush, flushed, wait_for


async def test_a_burst_within_the_window_is_one_flush_with_each_key_at_its_latest():
    flush, flushed, wait_for = recorder()
    coalescer = Coalescer(Runtime(asyncio.get_running_loop()), flush, window=lambda topic: 0.05)
    coalescer.add("presence", "alice", "join")
    await wait_for(1)  # the first change of a quiet topic goes out at once
    for change in ("leave", "join", "away"):
        coalescer.add("presence", "alice", change)
    coalescer.add("presence", "bob", "join")
    await wait_for(2)
    await asyncio.sleep(0.1)
    assert flushed == [("presence", {"alice": "join"}), ("presence", {"alice": "away", "bob": "join"})]


async def test_merge_folds_a_newer_change_into_the_pending_one():
    flush, flushed, wait_for = recorder()
    coalescer = Coalescer(
        Runtime(asyncio.get_running_loop()), flush, window=lambda topic: 0.05, merge=lambda old, new: old + new
    )
    coalescer.add("room", "users", 1)
    coalescer.add("room", "users", 2)
    await wait_for(1)
    assert flushed == [("room", {"users": 3})]


async def test_a_failed_flush_is_retried_and_newer_changes_win(monkeypatch):
    monkeypatch.setattr("realtime.coalesce.RETRY_DELAYS", (0.05,))
    flush, flushed, wait_for = recorder([False, True])
    coalescer = Coalescer(Runtime(asyncio.get_running_loop()), flush, window=lambda topic: 0.01)
    coalescer.add("presence", "alice", "join")
    coalescer.add("presence", "bob", "join")
    await wait_for(1)
    coalescer.add("presence", "alice", "leave")  # newer than the failed batch's join
    await wait_for(2)
    assert flushed[1] == ("presence", {"alice": "leave", "bob": "join"})


async def test_topics_flush_apart():
    flush, flushed, wait_for = recorder()
    coalescer = Coalescer(Runtime(asyncio.get_running_loop()), flush, window=lambda topic: 0.05)
    coalescer.add("chat.room.a", "users", True)
    coalescer.add("chat.room.b", "users", True)
    await wait_for(2)
    assert sorted(topic for topic, _ in flushed) == ["chat.room.a", "chat.room.b"]


async def test_a_change_during_a_slow_flush_waits_for_it_and_then_for_the_window():
    loop = asyncio.get_running_loop()
    sent_at: list[float] = []
    release = asyncio.Event()

    async def slow(topic: str, batch: dict) -> bool:
        sent_at.append(loop.time())
        if len(sent_at) == 1:
            await release.wait()  # the layer takes its time with the first one
        return True

    coalescer = Coalescer(Runtime(loop), slow, window=lambda topic: 0.1)
    coalescer.add("presence", "alice", "join")
    await asyncio.sleep(0.01)
    coalescer.add("presence", "bob", "join")  # while the first is still being sent
    await asyncio.sleep(0.15)
    release.set()
    finished = loop.time()
    while len(sent_at) < 2:
        await asyncio.sleep(0.01)
    assert sent_at[1] - finished >= 0.09, "the second flush waits a whole window after the first was handed over"
