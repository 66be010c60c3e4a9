from collections.abc import Callable
from functools import wraps

from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from chat import protocol
from chat.forms import RoomForm
from chat.models import Message, Room
from chat.selectors import (
    membership_marker,
    room_history,
    room_list,
    room_member_names,
    room_presence,
    room_readable,
    rooms_of_user,
)
from chat.services import RoomForbidden, membership_leave, message_delete, room_create, room_direct_open
from realtime.protocol import FORBIDDEN, INVALID

# JSON error codes of the /api/ endpoints beside realtime.protocol's.
NOT_LOGGED_IN = "not_logged_in"
NOT_FOUND = "not_found"
METHOD_NOT_ALLOWED = "method_not_allowed"


def _valid_slug(slug: str) -> str:
    if not protocol.slug_is_valid(slug):
        raise Http404("No such room.")
    return slug


def _readable_room(request: HttpRequest, slug: str) -> Room:
    """The room if this user may read it; 404 alike for a missing room and a direct room of others."""
    room = room_readable(slug=_valid_slug(slug), user=request.user)
    if room is None:
        raise Http404("No such room.")
    return room


def _json_error(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail}, status=status)


def api_view(*methods: str) -> Callable:
    """An /api/ endpoint: logged-in users only (else 401), these methods only (else 405), errors as JSON."""

    def wrap(view: Callable) -> Callable:
        @wraps(view)
        def run(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not request.user.is_authenticated:
                return _json_error(401, NOT_LOGGED_IN, "Log in first.")
            if request.method not in methods:
                response = _json_error(405, METHOD_NOT_ALLOWED, f"Use {' or '.join(methods)}.")
                response["Allow"] = ", ".join(methods)
                return response
            try:
                return view(request, *args, **kwargs)
            except Http404:
                return _json_error(404, NOT_FOUND, "No such room.")

        return run

    return wrap


@login_required
@require_http_methods(["GET", "POST"])
def room_list_page(request: HttpRequest) -> HttpResponse:
    """The rooms, with how many people are in each now, and a form to create one."""
    form = RoomForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            room = room_create(title=form.cleaned_data["name"], user=request.user)
        except ValidationError as error:
            form.add_error("name", error)
        else:
            return redirect("chat:room", slug=room.slug)
    context = {"rooms": rooms_of_user(user=request.user), "other_rooms": room_list(user=request.user), "form": form}
    return render(request, "chat/rooms.html", context)


@login_required
@require_GET
def room_page(request: HttpRequest, slug: str) -> HttpResponse:
    """A room: initial history and presence in json_script, then live over /ws/chat/<slug>/.

    A room that does not exist is a 404 page that offers to create it, by a
    POST: a GET never creates one. Nor does it make the user a member: the
    page's socket does (opening a room joins it), which another site cannot
    open in the user's name (the Origin check), where a link or an image could
    make them GET this page.
    """
    slug = _valid_slug(slug)
    room = room_readable(slug=slug, user=request.user)
    if room is None:
        # Another's direct room looks exactly like a missing one (its slug form is never offered for creation).
        creatable = not protocol.slug_is_direct(slug)
        return render(request, "chat/missing.html", {"slug": slug, "creatable": creatable}, status=404)
    me = request.user.get_username()
    messages, has_more = room_history(room=room)
    members = room_member_names(room=room)
    marker = membership_marker(room=room, user=request.user)
    if marker is None:
        # Not a member yet: the socket makes them one with the room's past read, as it is shown here.
        marker = messages[-1]["id"] if messages else 0
    title = room.title
    if room.kind == protocol.KIND_DIRECT:
        title = next((name for name in members if name != me), title)
    initial = {
        "room": room.slug,
        "title": title,
        "kind": room.kind,
        "messages": messages,
        "has_more": has_more,
        "last_read": marker or None,
        "users": room_presence(slug=room.slug),
        "members": members,
        "me": me,
        "moderator": request.user.is_staff,
    }
    context = {"room": room, "title": title, "initial": initial, "rooms": rooms_of_user(user=request.user)}
    return render(request, "chat/room.html", context)


@login_required
@require_GET
def direct_page(request: HttpRequest, username: str) -> HttpResponse:
    """/chat/dm/<username>/: to the direct room with that person, made on first use; yourself or nobody is a 404."""
    other = get_user_model().objects.filter(username=username, is_active=True).first()
    if other is None or other.pk == request.user.pk:
        raise Http404("No such person.")
    try:
        room = room_direct_open(user=request.user, other=other)
    except RoomForbidden:
        raise Http404("No such room.") from None
    return redirect("chat:room", slug=room.slug)


@login_required
@require_POST
def room_leave(request: HttpRequest, slug: str) -> HttpResponse:
    """Take a public room off the user's list, then back to the rooms; a direct room's members are fixed (403)."""
    room = _readable_room(request, slug)
    try:
        membership_leave(room=room, user=request.user)
    except PermissionDenied:
        return _json_error(403, FORBIDDEN, "A direct room's members are fixed.")
    return redirect("chat:rooms")


@api_view("GET")
def api_rooms(request: HttpRequest) -> JsonResponse:
    """GET /api/rooms: the user's rooms with their counts and newest message, most recent activity first."""
    return JsonResponse({"rooms": rooms_of_user(user=request.user)}, json_dumps_params={"ensure_ascii": False})


def _optional_id(request: HttpRequest, name: str) -> int | None:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ValueError(f"'{name}' must be a whole number.")
    return int(raw)


@login_required
@require_GET
def room_messages(request: HttpRequest, slug: str) -> JsonResponse:
    """Older history: {"messages": [...], "has_more": bool}, oldest first, before an id."""
    room = _readable_room(request, slug)
    try:
        before = _optional_id(request, "before")
        limit = _optional_id(request, "limit")
    except ValueError as error:
        return JsonResponse({"error": INVALID, "detail": str(error)}, status=400)
    if limit is None:
        limit = protocol.HISTORY_LIMIT
    if not 1 <= limit <= protocol.HISTORY_PAGE_MAX:
        detail = f"'limit' must be between 1 and {protocol.HISTORY_PAGE_MAX}."
        return JsonResponse({"error": INVALID, "detail": detail}, status=400)
    messages, has_more = room_history(room=room, before=before, limit=limit)
    return JsonResponse({"messages": messages, "has_more": has_more}, json_dumps_params={"ensure_ascii": False})


@login_required
@require_POST
def message_delete_view(request: HttpRequest, slug: str, message_id: int) -> JsonResponse:
    """Delete a message (staff, or its author); every socket in the room is told."""
    room = _readable_room(request, slug)
    if not Message.objects.filter(id=message_id, room=room).exists():
        raise Http404("No such message.")
    try:
        message_delete(user=request.user, message_id=message_id)
    except Message.DoesNotExist:
        raise Http404("No such message.") from None
    except PermissionDenied:
        return JsonResponse({"error": "forbidden", "detail": "Only staff and the author may delete it."}, status=403)
    return JsonResponse({"deleted": message_id})
