from django.conf import settings
from django.core.checks import Error, register


@register()
def chat_timings(app_configs, **kwargs):
    """room.activity is promised within 250 ms of a message (docs/protocol.md)."""
    if not 0 <= settings.CHAT_ACTIVITY_WINDOW <= 0.25:
        return [Error("CHAT_ACTIVITY_WINDOW must be between 0 and 0.25 s.", id="chat.E001")]
    return []
