from django.contrib import admin
from django.urls import include, path

from activity.views import dashboard as activity_dashboard
from presence_site import health, pages

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("favicon.ico", pages.favicon, name="favicon"),
    path("_errors/<int:status>/", pages.error_preview, name="error-preview"),
    path("admin/activity/", admin.site.admin_view(activity_dashboard), name="admin-activity"),
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("chat/", include("chat.urls")),
    path("api/", include("chat.api_urls")),
    path("", include("presence.urls")),
]
