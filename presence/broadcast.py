"""Telling sockets on any process to do something, from sync code (views, signals, admin)."""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from presence.fanout import sockets_end
from presence.services import session_channels, user_channels


def _close_channels(channel_names: list[str], reason: str) -> int:
    """channel_names: the sockets' addresses, as stored in their Connection rows."""
    layer = get_channel_layer()
    if layer is None or not channel_names:
        return 0

    async_to_sync(sockets_end)(layer, channel_names, reason)
    return len(channel_names)


def session_sockets_close(*, session_key: str) -> int:
    """Close, with 4000, every socket opened with this session; return how many were told."""
    return _close_channels(session_channels(session_key=session_key), "logged out")


def user_sockets_close(*, user_id: int, except_session_key: str | None = None, reason: str = "session ended") -> int:
    """Close, with 4000, every socket of this user on every process, but those of one session if given."""
    return _close_channels(user_channels(user_id=user_id, except_session_key=except_session_key), reason)
