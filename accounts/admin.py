from django.contrib import admin, messages
from django.contrib.sessions.models import Session
from django.db.models import OuterRef, Subquery

from accounts.models import AuditEntry, LoggedInUser
from accounts.services import audit_record, logged_in_sessions_end, users_sessions_end

# The user flags whose changes the audit log records, and the action for each direction (set, cleared).
AUDITED_FLAGS = {
    "is_active": (AuditEntry.Action.USER_REACTIVATED, AuditEntry.Action.USER_DEACTIVATED),
    "is_staff": (AuditEntry.Action.STAFF_GRANTED, AuditEntry.Action.STAFF_REMOVED),
    "is_superuser": (AuditEntry.Action.SUPERUSER_GRANTED, AuditEntry.Action.SUPERUSER_REMOVED),
}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@admin.register(LoggedInUser)
class LoggedInUserAdmin(admin.ModelAdmin):
    """The sessions users are logged in with. Deleting one ends it: that browser is logged out, its sockets closed."""

    list_display = ["user", "session_key_short", "logged_in_at", "expires"]
    list_select_related = ["user"]
    search_fields = ["user__username"]
    fields = ["user", "logged_in_at"]
    readonly_fields = ["user", "logged_in_at"]

    def get_queryset(self, request):
        # The expiry comes with the rows, in the one list query (database sessions only; else blank).
        expiry = Session.objects.filter(session_key=OuterRef("session_key")).values("expire_date")[:1]
        return super().get_queryset(request).annotate(expire_date=Subquery(expiry))

    @admin.display(description="session")
    def session_key_short(self, obj: LoggedInUser) -> str:
        # Enough to tell sessions apart without showing a usable key.
        return f"{obj.session_key[:6]}…" if obj.session_key else "(no request)"

    @admin.display(ordering="expire_date")
    def expires(self, obj: LoggedInUser):
        return obj.expire_date

    def has_add_permission(self, request) -> bool:
        return False

    def delete_model(self, request, obj: LoggedInUser) -> None:
        """Called for the delete button on one session: the session ends for real."""
        logged_in_sessions_end(records=LoggedInUser.objects.filter(pk=obj.pk), actor=request.user)

    def delete_queryset(self, request, queryset) -> None:
        """Called for the bulk delete action."""
        logged_in_sessions_end(records=queryset, actor=request.user)


class UserModerationAdmin(admin.ModelAdmin):
    """What staff do to users in the admin, recorded in the audit log; mixed into the user admin.

    The user admin itself is registered by presence (it shows who is online);
    this mixin keeps the moderation with the accounts it moderates.
    """

    actions = ["end_all_sessions"]

    @admin.action(description="End all sessions")
    def end_all_sessions(self, request, queryset) -> None:
        """Log the selected users out everywhere and close their sockets (4000)."""
        users, sessions, sockets = users_sessions_end(
            user_ids=queryset.values_list("pk", flat=True), actor=request.user
        )
        self.message_user(
            request,
            f"Ended {_count(sessions, 'session')} and closed {_count(sockets, 'socket')} of {_count(users, 'user')}.",
            messages.SUCCESS,
        )

    def save_model(self, request, obj, form, change) -> None:
        """Called in the transaction of the change form: a change of the audited flags is recorded with it."""
        before = None
        if change:
            before = type(obj)._default_manager.filter(pk=obj.pk).values(*AUDITED_FLAGS).first()
        super().save_model(request, obj, form, change)
        if before is None:
            return
        for flag, (when_set, when_cleared) in AUDITED_FLAGS.items():
            now = getattr(obj, flag)
            if now != before[flag]:
                audit_record(actor=request.user, action=when_set if now else when_cleared, target=obj)


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """The audit log of moderation: read-only, never changed or deleted from here."""

    list_display = ["at", "actor_name", "action", "target_name", "detail"]
    list_filter = ["action", "actor_name"]
    search_fields = ["actor_name", "target_name", "detail"]
    date_hierarchy = "at"
    fields = ["at", "actor_name", "action", "target_name", "detail"]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
