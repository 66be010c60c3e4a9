from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_save, pre_save

        from chat import signals

        user_model = get_user_model()
        pre_save.connect(signals.remember_deactivation, sender=user_model, dispatch_uid="chat.remember_deactivation")
        post_save.connect(signals.end_deactivated_sessions, sender=user_model, dispatch_uid="chat.end_deactivated")
