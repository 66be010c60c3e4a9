import logging
from importlib import import_module

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, transaction

from accounts.models import LoggedInUser, UsernameSkeleton
from accounts.skeleton import username_skeleton_digest

logger = logging.getLogger("accounts.security")


def logged_in_user_record(*, user: AbstractBaseUser, session_key: str | None) -> LoggedInUser:
    """Record that user holds session_key (None when the login came without a request)."""
    if session_key is None:
        return LoggedInUser.objects.create(user=user, session_key=None)
    record, _ = LoggedInUser.objects.update_or_create(session_key=session_key, defaults={"user": user})
    return record


def logged_in_user_forget(*, user: AbstractBaseUser | None, session_key: str | None) -> int:
    """Forget one session of a user; the user's other sessions stay recorded."""
    if session_key:
        deleted, _ = LoggedInUser.objects.filter(session_key=session_key).delete()
        return deleted
    if user is None:
        return 0
    deleted, _ = LoggedInUser.objects.filter(user=user, session_key__isnull=True).delete()
    return deleted


def logged_in_user_password_changed(
    *, user: AbstractBaseUser, old_session_key: str | None, new_session_key: str | None
) -> int:
    """Keep the session that changed the password (under its new key); forget the user's others.

    The other sessions no longer match the password hash, so Django logs them
    out at their next request: they are no longer logged in.
    """
    others = LoggedInUser.objects.filter(user=user)
    if new_session_key:
        if old_session_key:
            LoggedInUser.objects.filter(session_key=old_session_key).update(session_key=new_session_key)
        others = others.exclude(session_key=new_session_key)
    forgotten, _ = others.delete()
    return forgotten


def user_sessions_end(*, user_id: int, reason: str = "session ended") -> tuple[int, int]:
    """Log a user out everywhere: delete their sessions, then have their sockets closed (4000).

    The sessions go first, so that a socket that reconnects is refused with
    4401. The sockets are closed by the receivers of accounts.signals.sessions_ended.
    Returns how many sessions were deleted and how many sockets were told to close.
    """
    from accounts.signals import sessions_ended

    store = import_module(settings.SESSION_ENGINE).SessionStore
    with transaction.atomic():
        keys = set(
            LoggedInUser.objects.filter(user_id=user_id, session_key__isnull=False).values_list(
                "session_key", flat=True
            )
        )
        sessions = 0
        for key in keys:
            if store().exists(key):
                store(session_key=key).delete()
                sessions += 1
        LoggedInUser.objects.filter(user_id=user_id).delete()
    answers = sessions_ended.send(sender=LoggedInUser, user_id=user_id, reason=reason)
    sockets = sum(answer for _, answer in answers if isinstance(answer, int))
    return sessions, sockets


def username_skeleton_record(*, user: AbstractBaseUser) -> UsernameSkeleton | None:
    """Keep the index of the user's name in step with it; None when an earlier user's name looks alike."""
    digest = username_skeleton_digest(user.get_username())
    row = UsernameSkeleton.objects.filter(user_id=user.pk).first()
    if row is not None and row.digest == digest:
        return row
    try:
        with transaction.atomic():
            row, _ = UsernameSkeleton.objects.update_or_create(user_id=user.pk, defaults={"digest": digest})
            return row
    except IntegrityError:
        # The earlier user keeps the digest. Sign-up refuses such a name; the
        # admin, a shell or a rename can still make one, which is logged.
        UsernameSkeleton.objects.filter(user_id=user.pk).delete()
        holder = UsernameSkeleton.objects.filter(digest=digest).values_list("user_id", flat=True).first()
        logger.warning(
            "look-alike user name kept out of the index: user=%r#%s looks like user #%s",
            user.get_username(),
            user.pk,
            holder,
        )
        return None
