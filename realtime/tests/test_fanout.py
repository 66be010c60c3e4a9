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
