from django.conf import settings
from django.core.checks import Error, Warning, register


@register()
def presence_timings(app_configs, **kwargs):
    """The heartbeat must beat several times per TTL, and the TTL stay within the promised bound."""
    problems = []
    ttl = settings.PRESENCE_TTL
    interval = settings.PRESENCE_HEARTBEAT_INTERVAL
    if interval <= 0 or ttl <= 0:
        problems.append(Error("PRESENCE_TTL and PRESENCE_HEARTBEAT_INTERVAL must be positive.", id="presence.E001"))
    elif interval * 2 > ttl:
        problems.append(
            Error(
                f"PRESENCE_HEARTBEAT_INTERVAL ({interval:g}s) must be at most half of PRESENCE_TTL ({ttl:g}s), "
                "or live sockets are swept as stale between two heartbeats.",
                id="presence.E002",
            )
        )
    if ttl > 90:
        problems.append(
            Warning(
                f"PRESENCE_TTL is {ttl:g}s: a crashed process leaves its users online that long.", id="presence.W001"
            )
        )
    if settings.PRESENCE_COALESCE_WINDOW > 0.25:
        problems.append(Error("PRESENCE_COALESCE_WINDOW must be at most 0.25 s.", id="presence.E003"))
    if settings.PRESENCE_LEAVE_GRACE > 2:
        problems.append(
            Error("PRESENCE_LEAVE_GRACE must be at most 2 s (leaves are due within 3 s).", id="presence.E004")
        )
    if (
        settings.SOCKET_FRAME_RATE <= 0
        or settings.SOCKET_FRAME_BURST < 1
        or settings.SOCKET_FLOOD_STRIKES < 0
        or settings.SOCKET_MAX_PER_USER < 1
        or settings.SOCKET_SESSION_CHECK_INTERVAL <= 0
    ):
        problems.append(
            Error(
                "SOCKET_FRAME_RATE and SOCKET_SESSION_CHECK_INTERVAL must be positive, SOCKET_FRAME_BURST and "
                "SOCKET_MAX_PER_USER at least 1, SOCKET_FLOOD_STRIKES at least 0.",
                id="presence.E006",
            )
        )
    if settings.CHANNEL_GROUP_EXPIRY < settings.WEBSOCKET_TIMEOUT:
        problems.append(
            Error(
                f"CHANNEL_GROUP_EXPIRY ({settings.CHANNEL_GROUP_EXPIRY}s) is shorter than WEBSOCKET_TIMEOUT "
                f"({settings.WEBSOCKET_TIMEOUT}s): long-lived sockets would silently stop receiving.",
                id="presence.E005",
            )
        )
    return problems
