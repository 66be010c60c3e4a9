from django.apps import AppConfig


class ActivityConfig(AppConfig):
    """The admin's view of the deployment: online samples, daily roll-ups, the dashboard, the housekeeping jobs."""

    name = "activity"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from activity import checks, jobs  # noqa: F401  (checks and periodic jobs register themselves)
