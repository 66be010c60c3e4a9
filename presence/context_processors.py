from django.conf import settings
from django.http import HttpRequest


def client_settings(request: HttpRequest) -> dict:
    """What the page scripts read on every page: settings on <body>, and the user's own status for the header."""
    context = {"presence_idle_after": settings.PRESENCE_IDLE_AFTER}
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        from presence.selectors import presence_of

        # A callable, which the template calls only where it renders the header (one query).
        context["me_presence"] = lambda: {
            "username": user.get_username(),
            **presence_of(user_id=user.pk),
            "allow_invisible": settings.PRESENCE_ALLOW_INVISIBLE,
        }
    return context
