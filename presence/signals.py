"""Receivers that keep sockets in step with sessions: adapters that call a presence service; and presence's signal."""

from django.dispatch import Signal

from presence.services import connection_session_rekey, session_sockets_close, user_sockets_close

# Sent (from the event loop) when what others see of a user changed: their status, or their invisibility.
# user_id. Receivers must not touch the database in the call: schedule the work (chat refreshes room lists).
status_changed = Signal()


def close_session_sockets(sender, request=None, **kwargs) -> None:
    """Called before the session is flushed: close the sockets opened with it (4000)."""
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        session_sockets_close(session_key=session_key)


def close_other_sessions_sockets(sender, user, old_session_key=None, new_session_key=None, **kwargs) -> None:
    """Called after a password change: this session's sockets follow its new key, the others close (4000)."""
    connection_session_rekey(old_session_key=old_session_key or "", new_session_key=new_session_key or "")
    user_sockets_close(user_id=user.pk, except_session_key=new_session_key, reason="password changed")


def close_user_sockets(sender, user_id: int, reason: str = "session ended", **kwargs) -> int:
    """Called once a user's sessions were ended (accounts.services.user_sessions_end): close every socket (4000)."""
    return user_sockets_close(user_id=user_id, reason=reason)


def close_ended_session_sockets(sender, session_key: str, **kwargs) -> int:
    """Called once staff ended one session (accounts.services.logged_in_sessions_end): close its sockets (4000)."""
    return session_sockets_close(session_key=session_key)
