import logging
from collections.abc import Iterable
from importlib import import_module

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from accounts.models import AuditEntry, LoggedInUser, UsernameSkeleton
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


def user_sessions_end(
    *, user_id: int, reason: str = "session ended", actor: AbstractBaseUser | None = None
) -> tuple[int, int]:
    """Log a user out everywhere: delete their sessions, then have their sockets closed (4000).

    The sessions go first, so that a socket that reconnects is refused with
    4401. The sockets are closed by the receivers of accounts.signals.sessions_ended.
    With an actor (staff in the admin), the audit log records it in the same transaction.
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
        if actor is not None:
            user = get_user_model()._default_manager.filter(pk=user_id).first()
            audit_record(
                actor=actor,
                action=AuditEntry.Action.SESSIONS_ENDED,
                target=user,
                detail=f"{sessions} session{'' if sessions == 1 else 's'}: {reason}",
            )
    answers = sessions_ended.send(sender=LoggedInUser, user_id=user_id, reason=reason)
    sockets = sum(answer for _, answer in answers if isinstance(answer, int))
    return sessions, sockets


def users_sessions_end(
    *, user_ids, reason: str = "ended by staff", actor: AbstractBaseUser | None = None
) -> tuple[int, int, int]:
    """user_sessions_end() for each of several users; returns how many users, sessions and sockets."""
    user_ids = list(dict.fromkeys(user_ids))
    sessions = sockets = 0
    for user_id in user_ids:
        ended, closed = user_sessions_end(user_id=user_id, reason=reason, actor=actor)
        sessions += ended
        sockets += closed
    return len(user_ids), sessions, sockets


def logged_in_sessions_end(*, records: QuerySet[LoggedInUser], actor: AbstractBaseUser | None = None) -> int:
    """End the sessions of these logged-in records: each browser is logged out and its sockets closed (4000).

    Called when staff delete rows of the admin's logged-in sessions list. The
    sockets are closed by the receivers of accounts.signals.session_ended, once
    the deletion is committed, so that a socket that reconnects is refused.
    Returns how many records there were.
    """
    from accounts.signals import session_ended

    store = import_module(settings.SESSION_ENGINE).SessionStore
    with transaction.atomic():
        rows = list(records.select_related("user"))
        for row in rows:
            if row.session_key:
                store(session_key=row.session_key).delete()
        LoggedInUser.objects.filter(pk__in=[row.pk for row in rows]).delete()
        if actor is not None:
            audit_record_many(
                actor=actor,
                action=AuditEntry.Action.SESSIONS_ENDED,
                targets=[
                    (
                        row.user_id,
                        row.user.get_username(),
                        f"1 session, logged in {row.logged_in_at:%Y-%m-%d %H:%M} UTC",
                    )
                    for row in rows
                ],
            )
        for row in rows:
            if row.session_key:
                transaction.on_commit(
                    lambda key=row.session_key, user_id=row.user_id: session_ended.send(
                        sender=LoggedInUser, session_key=key, user_id=user_id
                    )
                )
    return len(rows)


def sessions_clear_ended() -> int:
    """Delete expired sessions (what `manage.py clearsessions` does) and the logged-in records of every ended session.

    Called by the deployment's housekeeping job and by `manage.py clear_ended_sessions`.
    Neither an expiry nor clearsessions' bulk delete sends a signal, so the
    records of those sessions are found here, in one query with the database
    session engines. Records of logins that came without a request (no key)
    are left: they name no session. Returns how many records were deleted.
    """
    engine = import_module(settings.SESSION_ENGINE)
    engine.SessionStore.clear_expired()
    records = LoggedInUser.objects.filter(session_key__isnull=False)
    get_model = getattr(engine.SessionStore, "get_model_class", None)
    if get_model is not None:
        live = get_model().objects.filter(session_key=OuterRef("session_key"), expire_date__gt=timezone.now())
        deleted, _ = records.exclude(Exists(live)).delete()
        return deleted
    if settings.SESSION_ENGINE.endswith("signed_cookies"):
        return 0  # the sessions live in the browsers: nothing here can tell which ended
    store = engine.SessionStore
    ended = [key for key in records.values_list("session_key", flat=True).iterator() if not store().exists(key)]
    deleted, _ = LoggedInUser.objects.filter(session_key__in=ended).delete()
    return deleted


def audit_record(
    *, actor: AbstractBaseUser, action: str, target: AbstractBaseUser | None = None, detail: str = ""
) -> AuditEntry:
    """Record a moderation action by actor on target, in the caller's transaction."""
    return AuditEntry.objects.create(
        actor=actor,
        actor_name=actor.get_username(),
        action=action,
        target=target,
        target_name=target.get_username() if target is not None else "",
        detail=detail[:300],
    )


def audit_record_many(*, actor: AbstractBaseUser, action: str, targets: Iterable[tuple[int | None, str, str]]) -> int:
    """Record one action by actor on several users, (user id, user name, detail) each, in one INSERT."""
    entries = AuditEntry.objects.bulk_create(
        AuditEntry(
            actor=actor,
            actor_name=actor.get_username(),
            action=action,
            target_id=target_id,
            target_name=target_name,
            detail=detail[:300],
        )
        for target_id, target_name, detail in targets
    )
    return len(entries)


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
