"""Receivers that keep sessions and sockets in step with accounts that staff deactivate."""

from django.db import transaction

from chat.services import user_sessions_end


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
    transaction.on_commit(lambda: user_sessions_end(user_id=user_id))
