"""Every app's WebSocket routes, in one list for the ASGI router, and the answer for a path that matches none."""

from django.urls import re_path

from chat.routing import websocket_urlpatterns as chat_routes
from presence.routing import websocket_urlpatterns as presence_routes
from realtime.consumers import NotFoundConsumer

websocket_urlpatterns = [
    *presence_routes,
    *chat_routes,
    # Last: any other path is accepted and closed 4404, never an HTTP 500 ("No route found").
    re_path(r"", NotFoundConsumer.as_asgi()),
]
