from django.urls import re_path

from chat.consumers import ChatConsumer

# Any segment reaches the consumer, so that an invalid slug gets a readable 4404 after accept.
websocket_urlpatterns = [
    re_path(r"^ws/chat/(?P<slug>[^/]+)/$", ChatConsumer.as_asgi()),
]
