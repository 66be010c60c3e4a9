from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from axes.signals import user_locked_out
        from django.contrib.auth import get_user_model
        from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
        from django.db.models.signals import post_save, pre_save

        from accounts import signals

        user_logged_in.connect(signals.record_login, dispatch_uid="accounts.record_login")
        user_logged_out.connect(signals.record_logout, dispatch_uid="accounts.record_logout")
        user_login_failed.connect(signals.log_login_failed, dispatch_uid="accounts.log_login_failed")
        user_locked_out.connect(signals.log_lockout, dispatch_uid="accounts.log_lockout")
        signals.password_changed.connect(signals.record_password_change, dispatch_uid="accounts.password_change")
        user_model = get_user_model()
        pre_save.connect(
            signals.remember_deactivation, sender=user_model, dispatch_uid="accounts.remember_deactivation"
        )
        post_save.connect(signals.end_deactivated_sessions, sender=user_model, dispatch_uid="accounts.end_deactivated")
        post_save.connect(
            signals.record_username_skeleton, sender=user_model, dispatch_uid="accounts.username_skeleton"
        )
