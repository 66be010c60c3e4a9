from django.contrib import admin, messages
from django.db.models import Count

from accounts.services import users_sessions_end
from chat.models import Message, Room
from chat.services import messages_delete


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["slug", "title", "message_count", "created_by", "created_at"]
    list_select_related = ["created_by"]
    search_fields = ["slug", "title"]
    readonly_fields = ["created_at"]

    def get_queryset(self, request):
        # The counts come with the rooms, in the one list query.
        return super().get_queryset(request).annotate(message_count=Count("messages"))

    @admin.display(ordering="message_count", description="messages")
    def message_count(self, room) -> int:
        return room.message_count


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "room", "author", "excerpt", "sent_at"]
    list_filter = ["room"]
    list_select_related = ["room", "author"]
    search_fields = ["body", "author__username"]
    readonly_fields = ["room", "author", "body", "html", "sent_at", "edited_at", "client_id"]
    actions = ["end_author_sessions"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="body")
    def excerpt(self, message) -> str:
        return message.body if len(message.body) <= 80 else message.body[:79] + "…"

    def delete_model(self, request, obj) -> None:
        """Called for the delete button on one message: the rooms' clients drop it live."""
        messages_delete(messages=Message.objects.filter(pk=obj.pk), actor=request.user)

    def delete_queryset(self, request, queryset) -> None:
        """Called for the bulk delete action."""
        messages_delete(messages=queryset, actor=request.user)

    @admin.action(description="End all sessions of the selected messages' authors (closes their sockets)")
    def end_author_sessions(self, request, queryset) -> None:
        users, sessions, sockets = users_sessions_end(
            user_ids=queryset.values_list("author_id", flat=True), actor=request.user
        )
        self.message_user(
            request,
            f"Ended {sessions} sessions and closed {sockets} sockets of {users} users.",
            messages.SUCCESS,
        )
