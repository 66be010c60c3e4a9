"""Addressing one socket through its process's inbox (presence.fanout.send_to_socket)."""

from channels.layers import InMemoryChannelLayer

from presence.fanout import ADDRESS_KEY, send_to_socket


async def test_an_inbox_address_goes_to_the_inbox_with_the_address():
    layer = InMemoryChannelLayer()
    inbox = await layer.new_channel()
    await send_to_socket(layer, f"{inbox}#7", {"type": "session.end", "reason": "logged out"})
    assert await layer.receive(inbox) == {"type": "session.end", "reason": "logged out", ADDRESS_KEY: f"{inbox}#7"}


async def test_a_plain_channel_name_is_sent_to_as_it_is():
    layer = InMemoryChannelLayer()
    # RedisPubSubChannelLayer's channel names have dots and no "!".
    for name in ("specific.abc!def", "presencespecific.0a1b2c"):
        await send_to_socket(layer, name, {"type": "session.end", "reason": "logged out"})
        assert await layer.receive(name) == {"type": "session.end", "reason": "logged out"}
