"""The WebSocket origin check, as Channels does it, with each refusal logged."""

import logging
from urllib.parse import urlparse

from channels.security.websocket import OriginValidator, WebsocketDenier
from django.conf import settings

logger = logging.getLogger("realtime.sockets")


class LoggedOriginValidator(OriginValidator):
    """Channels' OriginValidator; a refused handshake (HTTP 403) is logged with its origin and address."""

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            raise ValueError("LoggedOriginValidator only guards WebSocket connections")
        raw = None
        parsed = None
        for name, value in scope.get("headers", []):
            if name == b"origin":
                raw = value.decode("latin1")
                parsed = urlparse(raw)
        if self.valid_origin(parsed):
            return await self.application(scope, receive, send)
        client = scope.get("client")
        logger.warning(
            "refused handshake: reason=origin not allowed origin=%r path=%r address=%s",
            raw,
            scope.get("path"),
            client[0] if client else "-",
        )
        return await WebsocketDenier()(scope, receive, send)


def allowed_hosts_origin_validator(application):
    """Accept only sockets whose Origin is one of ALLOWED_HOSTS (any port), as Channels' factory does."""
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]
    return LoggedOriginValidator(application, allowed_hosts)
