from django.conf import settings
from django.http import HttpRequest


def client_settings(request: HttpRequest) -> dict[str, float]:
    """Settings the page scripts read from data attributes on <body>."""
    return {"presence_idle_after": settings.PRESENCE_IDLE_AFTER}
