"""Telling sockets on any process to do something, from sync code (views, signals, admin)."""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from presence import protocol
from presence.services import session_channels, user_channels


def _close_channels(channel_names: list[str]) -> int:
    layer = get_channel_layer()
    if layer is None or not channel_names:
        return 0

    async def send_all() -> None:
        for name in channel_names:
            await layer.send(name, {"type": protocol.EVENT_SESSION_END})

    async_to_sync(send_all)()
    return len(channel_names)


def session_sockets_close(*, session_key: str) -> int:
    """Close, with 4000, every socket opened with this session; return how many were told."""
    return _close_channels(session_channels(session_key=session_key))


def user_sockets_close(*, user_id: int) -> int:
    """Close, with 4000, every socket of this user on every process."""
    return _close_channels(user_channels(user_id=user_id))
