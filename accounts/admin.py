from django.contrib import admin

from accounts.models import LoggedInUser


@admin.register(LoggedInUser)
class LoggedInUserAdmin(admin.ModelAdmin):
    list_display = ["user", "session_key_short", "logged_in_at"]
    list_select_related = ["user"]
    search_fields = ["user__username"]
    fields = ["user", "logged_in_at"]
    readonly_fields = ["user", "logged_in_at"]

    @admin.display(description="session")
    def session_key_short(self, obj: LoggedInUser) -> str:
        # Enough to tell sessions apart without showing a usable key.
        return f"{obj.session_key[:6]}…" if obj.session_key else "(no request)"

    def has_add_permission(self, request) -> bool:
        return False
