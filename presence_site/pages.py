"""Site-wide pages that belong to no app: the favicon, and a preview of the error pages for developers."""

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.templatetags.static import static
from django.views import defaults


def favicon(request: HttpRequest) -> HttpResponse:
    """Called for /favicon.ico, which browsers ask for on their own (the admin's pages, a first visit)."""
    return HttpResponseRedirect(static("favicon.ico"))


def error_preview(request: HttpRequest, status: int) -> HttpResponse:
    """With DEBUG=1, Django shows its debug pages instead of ours: this shows ours, as production serves them."""
    if not settings.DEBUG:
        raise Http404("Error page previews exist only with DEBUG=1.")
    if status == 404:
        return defaults.page_not_found(request, Http404("preview"))
    if status == 403:
        return defaults.permission_denied(request, PermissionDenied("preview"))
    if status == 500:
        return defaults.server_error(request)
    raise Http404("Previews exist for 403, 404 and 500.")
