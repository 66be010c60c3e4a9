from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self) -> None:
        from chat import consumers, metrics  # noqa: F401  (registers the chat metrics)
        from presence.signals import status_changed

        status_changed.connect(consumers.user_status_changed, dispatch_uid="chat.room_statuses")
