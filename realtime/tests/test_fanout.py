"""Addressing one socket through its process's inbox (realtime.fanout.send_to_socket)."""

import pytest
from channels.layers import get_channel_layer

from realtime.fanout import ADDRESS_KEY, send_to_socket


async def test_an_inbox_address_goes_to_the_inbox_with_the_address(settings):
    layer = get_channel_layer()
    inbox = await layer.new_channel()
    await send_to_socket(f"{inbox}#7", {"type": "session.end", "reason": "logged out"})
    assert await layer.receive(inbox) == {"type": "session.end", "reason": "logged out", ADDRESS_KEY: f"{inbox}#7"}


async def test_a_name_that_is_not_a_socket_address_is_refused():
    with pytest.raises(ValueError, match="not a socket address"):
        await send_to_socket("specific.abc!def", {"type": "session.end", "reason": "logged out"})
