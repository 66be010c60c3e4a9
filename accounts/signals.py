"""Receivers for Django's auth signals: adapters that call a service; and the signals accounts sends."""

import logging

from django.db import transaction
from django.dispatch import Signal

from accounts.services import (
    logged_in_user_forget,
    logged_in_user_password_changed,
    logged_in_user_record,
    user_sessions_end,
    username_skeleton_record,
)

logger = logging.getLogger("accounts.security")

# Sent after a password change (the accounts page, the admin), once the session
# that changed it holds its new key: user, request, old_session_key, and
# new_session_key (None when someone else's password was changed: none of the
# user's sessions is kept).
password_changed = Signal()

# Sent after every session of a user was ended (an admin, a deactivation), with
# user_id and reason: the apps that hold the user's sockets close them (4000),
# returning how many they told.
sessions_ended = Signal()

# Sent after one session was ended by staff (the logged-in sessions list), with
# session_key and user_id, once its deletion is committed: the apps that hold
# the session's sockets close them (4000).
session_ended = Signal()


def _session_key(request) -> str | None:
    session = getattr(request, "session", None)
    return getattr(session, "session_key", None)


def record_login(sender, user, request=None, **kwargs) -> None:
    """Called when a user logs in, through a view (request) or Channels (request=None)."""
    logged_in_user_record(user=user, session_key=_session_key(request))


def record_logout(sender, user=None, request=None, **kwargs) -> None:
    """Called before the session is flushed, so its key is still readable."""
    logged_in_user_forget(user=user, session_key=_session_key(request))


def record_password_change(sender, user, old_session_key=None, new_session_key=None, **kwargs) -> None:
    """Called after a password change: the user's other sessions are logged out."""
    logged_in_user_password_changed(user=user, old_session_key=old_session_key, new_session_key=new_session_key)


def log_lockout(sender, request=None, username=None, ip_address=None, **kwargs) -> None:
    """Called by django-axes when a user name is locked out at an address; never logs the password."""
    logger.warning("log-in locked out: reason=too many failed attempts user=%r address=%s", username, ip_address)


def log_login_failed(sender, credentials=None, request=None, **kwargs) -> None:
    """Called on each failed log-in; Django has already masked the password in credentials."""
    username = (credentials or {}).get("username")
    address = getattr(request, "META", {}).get("REMOTE_ADDR") if request is not None else None
    logger.info("log-in failed: reason=bad credentials user=%r address=%s", username, address)


def remember_deactivation(sender, instance, raw=False, **kwargs) -> None:
    """Called before a user is saved: note whether this save deactivates them (one query, only for inactive users)."""
    # Set on every save: a flag left by a save that failed must not end the sessions of a later one.
    instance._deactivated = (
        not raw
        and instance.pk is not None
        and not instance.is_active
        and sender._default_manager.filter(pk=instance.pk, is_active=True).exists()
    )


def end_deactivated_sessions(sender, instance, **kwargs) -> None:
    """Called after a user is saved: a deactivated user is logged out everywhere, their sockets closed (4000)."""
    if not getattr(instance, "_deactivated", False):
        return
    instance._deactivated = False
    user_id = instance.pk
    transaction.on_commit(lambda: user_sessions_end(user_id=user_id, reason="account deactivated"))


def record_username_skeleton(sender, instance, raw=False, update_fields=None, **kwargs) -> None:
    """Called after a user is saved (sign-up, admin, shell); a save that leaves the name alone is skipped."""
    if not raw and (update_fields is None or instance.USERNAME_FIELD in update_fields):
        username_skeleton_record(user=instance)
