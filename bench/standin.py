"""A chat-shaped room on the app's own socket plumbing, without storing messages.

It serves /ws/chat/<room>/ with a consumer built on presence.sockets.TrackedSocket
(authentication, presence registration, safe decoding, frames serialized once
and forwarded through the channel layer), so the bench can separate the cost of
delivery from the cost of storing each message in the database.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "presence_site.settings")
django_asgi_app = get_asgi_application()

from typing import Any  # noqa: E402

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from presence.sockets import TrackedSocket  # noqa: E402
from presence_site.routing import websocket_urlpatterns  # noqa: E402
from realtime import daphne_compat, protocol  # noqa: E402
from realtime.broadcast import broadcast  # noqa: E402

# As the app's own ASGI module does: the same Daphne underneath.
daphne_compat.install()


class RoomConsumer(TrackedSocket):
    endpoint = "chat"
    client_types = {**TrackedSocket.client_types, "chat.message": "on_message"}

    def topic_groups(self) -> tuple[str, ...]:
        return (f"bench-room-{self.scope['url_route']['kwargs']['room']}",)

    async def on_message(self, frame: dict[str, Any]) -> None:
        body = frame.get("body")
        if not isinstance(body, str):
            raise protocol.ProtocolError(protocol.INVALID, "A message needs a string body.")
        message = {
            "type": "chat.message",
            "username": self.scope["user"].username,
            "body": body,
            "client_id": frame.get("client_id"),
        }
        await broadcast(self.topic_groups()[0], message, label="bench_message")


if os.environ.get("BENCH_TRACEMALLOC"):
    # Memory census for the bench: SIGUSR1 takes a baseline, the next SIGUSR1
    # writes what was allocated since, by line, to $BENCH_TRACEMALLOC.
    import signal
    import tracemalloc

    tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_DEPTH", "1")))
    _baseline: list = []

    def _census(signum, frame) -> None:
        snapshot = tracemalloc.take_snapshot()
        if not _baseline:
            _baseline.append(snapshot)
            return
        with open(os.environ["BENCH_TRACEMALLOC"], "w") as out:
            for stat in snapshot.compare_to(_baseline[0], "lineno")[:40]:
                out.write(f"{stat}\n")
            if tracemalloc.get_traceback_limit() > 1:
                for stat in snapshot.compare_to(_baseline[0], "traceback")[:12]:
                    out.write(f"\n{stat}\n" + "\n".join(stat.traceback.format()) + "\n")

    signal.signal(signal.SIGUSR1, _census)

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(
                URLRouter([path("ws/chat/<slug:room>/", RoomConsumer.as_asgi()), *websocket_urlpatterns])
            )
        ),
    }
)
