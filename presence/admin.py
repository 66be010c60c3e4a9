from datetime import timedelta

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import Exists, OuterRef
from django.utils import timezone

from accounts.admin import UserModerationAdmin
from accounts.signals import password_changed
from presence.models import Connection, UserPresence

User = get_user_model()


class OnlineFilter(admin.SimpleListFilter):
    title = "online"
    parameter_name = "online"

    def lookups(self, request, model_admin):
        return [("yes", "Online"), ("no", "Offline")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(is_online=True)
        if self.value() == "no":
            return queryset.filter(is_online=False)
        return queryset


admin.site.unregister(User)


@admin.register(User)
class PresenceUserAdmin(UserModerationAdmin, UserAdmin):
    """Django's user admin, with who is online and when the others were last seen, and accounts' moderation."""

    list_display = [*UserAdmin.list_display, "online", "last_seen"]
    list_filter = [OnlineFilter, *UserAdmin.list_filter]
    list_select_related = ["presence"]

    def get_queryset(self, request):
        cutoff = timezone.now() - timedelta(seconds=settings.PRESENCE_TTL)
        live = Connection.objects.filter(user_id=OuterRef("pk"), heartbeat_at__gte=cutoff)
        return super().get_queryset(request).annotate(is_online=Exists(live))

    def user_change_password(self, request, id, form_url=""):
        """Django's admin password form; a change ends the user's sessions (but the admin's own)."""
        old_session_key = request.session.session_key
        response = super().user_change_password(request, id, form_url)
        # Success redirects to the user's page; a conflicting form back to this one.
        if request.method == "POST" and response.status_code == 302 and response.url != request.get_full_path():
            user = self.get_object(request, unquote(id))
            own = user is not None and user.pk == request.user.pk
            password_changed.send(
                sender=type(self),
                user=user,
                request=request,
                old_session_key=old_session_key if own else None,
                new_session_key=request.session.session_key if own else None,
            )
        return response

    @admin.display(boolean=True, ordering="-is_online")
    def online(self, user) -> bool:
        return user.is_online

    @admin.display(ordering="presence__last_seen")
    def last_seen(self, user):
        presence = getattr(user, "presence", None)
        return presence.last_seen if presence else None


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    list_display = ["user", "endpoint", "topic", "server", "idle", "opened_at", "heartbeat_at"]
    list_filter = ["endpoint", "idle", "server"]
    list_select_related = ["user"]
    search_fields = ["user__username", "topic"]
    fields = ["user", "endpoint", "topic", "server", "idle", "opened_at", "heartbeat_at"]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(UserPresence)
class UserPresenceAdmin(admin.ModelAdmin):
    list_display = ["user", "online_since", "last_seen"]
    list_select_related = ["user"]
    search_fields = ["user__username"]
    readonly_fields = ["user", "online_since", "last_seen"]

    def has_add_permission(self, request) -> bool:
        return False
