from django.apps import AppConfig


class PresenceConfig(AppConfig):
    name = "presence"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_out

        from accounts.signals import password_changed, session_ended, sessions_ended
        from presence import checks, hub, metrics, signals  # noqa: F401  (checks, jobs and metrics register themselves)

        user_logged_out.connect(signals.close_session_sockets, dispatch_uid="presence.close_session_sockets")
        password_changed.connect(signals.close_other_sessions_sockets, dispatch_uid="presence.close_other_sessions")
        sessions_ended.connect(signals.close_user_sockets, dispatch_uid="presence.close_user_sockets")
        session_ended.connect(signals.close_ended_session_sockets, dispatch_uid="presence.close_ended_session")
