"""Every app's WebSocket routes, in one list for the ASGI router."""

from chat.routing import websocket_urlpatterns as chat_routes
from presence.routing import websocket_urlpatterns as presence_routes

websocket_urlpatterns = [*presence_routes, *chat_routes]
