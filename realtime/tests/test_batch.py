"""realtime.batch: what many callers ask at once is handled in rounds, and each caller gets its own answer."""

import asyncio
import threading

import pytest

from realtime.batch import Batch, each
from realtime.runtime import runtime

# A round runs on the process's rounds thread, which closes its stale database connection around each call.
pytestmark = pytest.mark.django_db


class Refused(Exception):
    pass


def doubling(rounds: list[list[int]], gate: threading.Event | None = None, entered: threading.Event | None = None):
    """A handler that records its rounds, doubles each item and refuses negative ones (optionally held on gate)."""

    def handle(items: list[int]) -> list:
        if entered is not None:
            entered.set()
        if gate is not None:
            assert gate.wait(5)
        rounds.append(list(items))
        return [Refused(item) if item < 0 else item * 2 for item in items]

    return handle


async def test_callers_that_ask_together_share_rounds_and_get_their_own_answers():
    rounds: list[list[int]] = []
    batch = Batch(runtime(), doubling(rounds), name="test")
    answers = await asyncio.gather(*(batch.submit(n) for n in range(100)))
    assert answers == [n * 2 for n in range(100)]
    assert sorted(n for items in rounds for n in items) == list(range(100))
    assert len(rounds) <= 2  # the first round may start before the rest are queued, never one round per caller


async def test_one_items_refusal_reaches_its_caller_alone():
    batch = Batch(runtime(), doubling([]), name="test")
    answers = await asyncio.gather(batch.submit(1), batch.submit(-1), batch.submit(2), return_exceptions=True)
    assert answers[0] == 2 and answers[2] == 4
    assert isinstance(answers[1], Refused)


async def test_a_round_that_fails_fails_each_of_its_callers_and_the_next_round_runs():
    calls = []

    def handler(items):
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("database unavailable")
        return items

    batch = Batch(runtime(), handler, name="test")
    with pytest.raises(RuntimeError):
        await batch.submit(1)
    assert await batch.submit(2) == 2


async def test_a_round_takes_at_most_its_limit_and_the_rest_follow():
    rounds: list[list[int]] = []
    batch = Batch(runtime(), doubling(rounds), name="test", limit=10)
    assert await asyncio.gather(*(batch.submit(n) for n in range(35))) == [n * 2 for n in range(35)]
    assert max(len(items) for items in rounds) <= 10


async def on_thread(event: threading.Event) -> None:
    """Wait, without blocking the loop, until the database thread's handler sets event."""
    assert await asyncio.get_running_loop().run_in_executor(None, event.wait, 5)


async def test_a_caller_cancelled_after_its_round_took_it_is_handed_to_abandoned():
    gate, entered = threading.Event(), threading.Event()
    abandoned: asyncio.Queue = asyncio.Queue()
    batch = Batch(
        runtime(), doubling([], gate, entered), name="test", abandoned=lambda item, result: abandoned.put_nowait(result)
    )
    waiting = asyncio.ensure_future(batch.submit(21))
    await on_thread(entered)  # the round has taken the item
    waiting.cancel()
    gate.set()
    assert await asyncio.wait_for(abandoned.get(), 5) == 42


async def test_a_caller_cancelled_before_its_round_asked_for_nothing():
    gate, entered = threading.Event(), threading.Event()
    rounds: list[list[int]] = []
    batch = Batch(runtime(), doubling(rounds, gate, entered), name="test")
    first = asyncio.ensure_future(batch.submit(1))
    await on_thread(entered)  # the first round holds the database thread
    second = asyncio.ensure_future(batch.submit(2))
    await asyncio.sleep(0)  # queued
    second.cancel()
    gate.set()
    assert await first == 2
    assert await batch.submit(3) == 6
    assert all(2 not in items for items in rounds)


async def test_each_calls_the_function_per_item_and_keeps_each_items_error_its_own():
    def halve(n: int) -> int:
        if n % 2:
            raise Refused(n)
        return n // 2

    batch = Batch(runtime(), each(halve), name="test")
    answers = await asyncio.gather(*(batch.submit(n) for n in (4, 3, 10)), return_exceptions=True)
    assert answers[0] == 2 and answers[2] == 5 and isinstance(answers[1], Refused)
