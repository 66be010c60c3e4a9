"""ASGI entry point: HTTP to Django, WebSockets through origin and auth checks to the consumers."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "presence_site.settings")

# Django must be set up before any consumer (and so any model) is imported.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from presence_site.routing import websocket_urlpatterns  # noqa: E402
from realtime import daphne_compat  # noqa: E402
from realtime.auth import AuthMiddlewareStack  # noqa: E402
from realtime.origin import allowed_hosts_origin_validator  # noqa: E402

# Daphne would turn the protocol's 1003/1008/1009/1013 closes into 1011, and wait a loop turn per frame.
daphne_compat.install()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Channels' AllowedHostsOriginValidator, with each refused handshake logged; Channels'
        # AuthMiddlewareStack, with the sessions and users of handshakes that arrive together read together.
        "websocket": allowed_hosts_origin_validator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
