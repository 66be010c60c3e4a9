"""Addressing one socket through its process's inbox (realtime.fanout.send_to_socket), and joining groups together."""

import asyncio
import copy

import pytest
from channels.layers import get_channel_layer

from realtime.fanout import ADDRESS_KEY, groups_add, send_to_socket, send_to_sockets
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


@pytest.mark.usefixtures("layer")
async def test_groups_added_together_hear_their_broadcasts_and_expire_as_group_add_makes_them(settings):
    layer = get_channel_layer()
    inbox = await layer.new_channel()
    await groups_add(layer, ["room.a", "room.b", "presence.user.7"], inbox)
    for group in ("room.a", "room.b", "presence.user.7"):
        await layer.group_send(group, {"type": "frame.forward", "text": group})
        assert (await layer.receive(inbox))["text"] == group
    if settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer":
        # The same keys, members and expiry as the layer's own group_add (a tripwire for channels-redis).
        await layer.group_add("room.c", inbox)
        redis = layer.connection(0)
        expected = await redis.zrange(layer._group_key("room.c"), 0, -1)
        assert await redis.zrange(layer._group_key("room.a"), 0, -1) == expected == [inbox.encode()]
        ttl_made, ttl_stock = await redis.ttl(layer._group_key("room.a")), await redis.ttl(layer._group_key("room.c"))
        assert abs(ttl_made - ttl_stock) <= 1 and ttl_stock > 0


@pytest.mark.usefixtures("layer")
async def test_a_group_joined_longer_ago_than_the_layers_group_expiry_still_hears_its_broadcasts(settings):
    from realtime.runtime import runtime

    expiry = 2
    layers = copy.deepcopy(settings.CHANNEL_LAYERS)
    layers["default"]["CONFIG"]["group_expiry"] = expiry
    settings.CHANNEL_LAYERS, settings.CHANNEL_GROUP_EXPIRY = layers, expiry  # renewed every second
    fanout = runtime().fanout
    address = await fanout.address()
    await fanout.join("room", address)
    try:
        # Time passing is the scenario: the layer drops a membership `expiry` seconds after its last group_add.
        await asyncio.sleep(2 * expiry)
        layer = get_channel_layer()
        await layer.group_send("room", {"type": "frame.forward", "text": "still in the room"})
        assert (await asyncio.wait_for(layer.receive(fanout.inbox), 5))["text"] == "still in the room"
    finally:
        await fanout.leave("room", address)
        fanout.stop()


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
