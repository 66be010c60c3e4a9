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
