"""Addressing one socket through its process's inbox (realtime.fanout.send_to_socket)."""

import pytest
from channels.layers import get_channel_layer

from realtime.fanout import ADDRESS_KEY, send_to_socket, send_to_sockets
from realtime.protocol import forward_each_event


async def test_an_inbox_address_goes_to_the_inbox_with_the_address(settings):
    layer = get_channel_layer()
    inbox = await layer.new_channel()
    await send_to_socket(f"{inbox}#7", {"type": "session.end", "reason": "logged out"})
    assert await layer.receive(inbox) == {"type": "session.end", "reason": "logged out", ADDRESS_KEY: f"{inbox}#7"}


async def test_a_name_that_is_not_a_socket_address_is_refused():
    with pytest.raises(ValueError, match="not a socket address"):
        await send_to_socket("specific.abc!def", {"type": "session.end", "reason": "logged out"})


async def test_frames_for_many_sockets_go_as_one_message_per_process_inbox(settings):
    layer = get_channel_layer()
    first, second = await layer.new_channel(), await layer.new_channel()
    frames = {f"{first}#1": '{"n":1}', f"{second}#4": '{"n":2}', f"{first}#2": '{"n":3}'}
    assert await send_to_sockets(frames, label="test") is True
    assert await layer.receive(first) == forward_each_event({f"{first}#1": '{"n":1}', f"{first}#2": '{"n":3}'})
    assert await layer.receive(second) == forward_each_event({f"{second}#4": '{"n":2}'})
    with pytest.raises(ValueError, match="not a socket address"):
        await send_to_sockets({"specific.abc!def": "{}"}, label="test")


@pytest.fixture
async def fanout_in_group():
    """This loop's Fanout with one socket address in group "room" (its inbox is not being received)."""
    from realtime.runtime import runtime

    fanout = runtime().fanout
    address = await fanout.address()
    await fanout.join("room", address)
    yield fanout
    await fanout.leave("room", address)
    fanout.stop()


async def test_a_broadcast_counts_in_its_groups_backlog_until_it_comes_back(settings, fanout_in_group):
    from realtime.broadcast import broadcast

    fanout, layer = fanout_in_group, get_channel_layer()
    settings.FANOUT_BACKLOG_LIMIT = 2
    await broadcast("room", {"type": "note", "n": 1}, label="test")
    assert (fanout.backlog("room"), fanout.behind("room")) == (1, False)
    await broadcast("room", {"type": "note", "n": 2}, label="test")
    assert (fanout.backlog("room"), fanout.behind("room")) == (2, True)
    assert fanout.backlog("elsewhere") == 0
    # The first one back: the second still counts.
    await fanout.deliver("room", await layer.receive(fanout.inbox))
    assert (fanout.backlog("room"), fanout.behind("room")) == (1, False)
    await fanout.deliver("room", await layer.receive(fanout.inbox))
    assert fanout.backlog("room") == 0


async def test_a_broadcast_the_layer_lost_stops_counting(monkeypatch, fanout_in_group):
    from realtime import fanout as module
    from realtime.broadcast import broadcast

    fanout, layer = fanout_in_group, get_channel_layer()
    for n in range(3):
        await broadcast("room", {"type": "note", "n": n}, label="test")
    await layer.receive(fanout.inbox)  # the first one lost on the way
    await layer.receive(fanout.inbox)  # and the second
    # The layer keeps a channel's order: when the third comes back, the two before it were lost.
    await fanout.deliver("room", await layer.receive(fanout.inbox))
    assert fanout.backlog("room") == 0
    await broadcast("room", {"type": "note", "n": 4}, label="test")
    await layer.receive(fanout.inbox)  # lost, and nothing after it
    assert fanout.backlog("room") == 1
    monkeypatch.setattr(module, "UNHEARD_GIVEN_UP", 0.0)
    assert fanout.backlog("room") == 0
