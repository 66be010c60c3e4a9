"""Every app's WebSocket routes, in one list for the ASGI router."""

from presence.routing import websocket_urlpatterns as presence_routes

websocket_urlpatterns = [*presence_routes]
