"""Receivers that keep sockets in step with sessions."""

from presence.broadcast import session_sockets_close, user_sockets_close
from presence.services import connection_session_rekey


def close_session_sockets(sender, request=None, **kwargs) -> None:
    """Called before the session is flushed: close the sockets opened with it (4000)."""
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        session_sockets_close(session_key=session_key)


def close_other_sessions_sockets(sender, user, old_session_key=None, new_session_key=None, **kwargs) -> None:
    """Called after a password change: this session's sockets follow its new key, the others close (4000)."""
    connection_session_rekey(old_session_key=old_session_key or "", new_session_key=new_session_key or "")
    user_sockets_close(user_id=user.pk, except_session_key=new_session_key, reason="password changed")
