from django.contrib import admin
from django.urls import include, path

from chat.urls import api_urlpatterns as chat_api
from presence_site import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("chat/", include("chat.urls")),
    path("api/", include((chat_api, "chat"), namespace="chat-api")),
    path("", include("presence.urls")),
]
