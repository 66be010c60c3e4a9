"""Receivers for Django's auth signals: adapters that call a service."""

from accounts.services import logged_in_user_forget, logged_in_user_record


def _session_key(request) -> str | None:
    session = getattr(request, "session", None)
    return getattr(session, "session_key", None)


def record_login(sender, user, request=None, **kwargs) -> None:
    """Called when a user logs in, through a view (request) or Channels (request=None)."""
    logged_in_user_record(user=user, session_key=_session_key(request))


def record_logout(sender, user=None, request=None, **kwargs) -> None:
    """Called before the session is flushed, so its key is still readable."""
    logged_in_user_forget(user=user, session_key=_session_key(request))
