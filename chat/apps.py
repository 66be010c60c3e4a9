from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from chat import checks, consumers, metrics, search  # noqa: F401  (register the chat checks and metrics)
        from presence.signals import status_changed

        status_changed.connect(consumers.user_status_changed, dispatch_uid="chat.room_statuses")
        post_migrate.connect(search.search_index_ensure, sender=self, dispatch_uid="chat.search_index")
