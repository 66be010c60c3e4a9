"""Receivers that keep sockets in step with sessions."""

from presence.broadcast import session_sockets_close


def close_session_sockets(sender, request=None, **kwargs) -> None:
    """Called before the session is flushed: close the sockets opened with it (4000)."""
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        session_sockets_close(session_key=session_key)
