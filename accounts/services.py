from django.contrib.auth.base_user import AbstractBaseUser

from accounts.models import LoggedInUser


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
