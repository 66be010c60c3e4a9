from django.conf import settings
from django.core.checks import Error, register


@register()
def activity_settings(app_configs, **kwargs):
    """The dashboard keeps at least a day, and housekeeping runs at a positive interval."""
    problems = []
    if settings.ACTIVITY_KEEP_DAYS < 1:
        problems.append(Error("ACTIVITY_KEEP_DAYS must be at least 1.", id="activity.E001"))
    if settings.HOUSEKEEPING_INTERVAL <= 0:
        problems.append(Error("HOUSEKEEPING_INTERVAL must be a positive number of seconds.", id="activity.E002"))
    return problems
