from collections.abc import Callable
from functools import wraps

from django.conf import settings
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
    message_edits,
    message_search,
    room_cursor,
    room_history,
    room_history_cursor,
    room_list,
    room_member_names,
    room_messages_around,
    room_messages_from_around,
    room_presence_statuses,
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


def _room_or_none(request: HttpRequest, slug: str) -> Room | None:
    """The room if this user may read it (the one may-read rule); None alike for a missing room and others' DMs."""
    if not protocol.slug_is_valid(slug):
        return None
    return room_readable(slug=slug, user=request.user)


def _readable_room(request: HttpRequest, slug: str) -> Room:
    """The room if this user may read it; 404 alike for a missing room and a direct room of others."""
    room = _room_or_none(request, slug)
    if room is None:
        raise Http404("No such room.")
    return room


def _json(payload: dict, status: int = 200) -> JsonResponse:
    return JsonResponse(payload, status=status, json_dumps_params={"ensure_ascii": False})


def _error(code: str, detail: str, status: int = 400) -> JsonResponse:
    return _json({"error": code, "detail": detail}, status=status)


def api_view(*methods: str) -> Callable:
    """An /api/ endpoint: logged-in users only (else 401), these methods only (else 405), errors as JSON."""

    def wrap(view: Callable) -> Callable:
        @wraps(view)
        def run(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not request.user.is_authenticated:
                return _error(NOT_LOGGED_IN, status=401, detail="Log in first.")
            if request.method not in methods:
                response = _error(METHOD_NOT_ALLOWED, status=405, detail=f"Use {' or '.join(methods)}.")
                response["Allow"] = ", ".join(methods)
                return response
            try:
                return view(request, *args, **kwargs)
            except Http404:
                return _error(NOT_FOUND, status=404, detail="No such room.")

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
    around = _around(request, room)
    if around is None:
        messages, has_more, cursor = room_history_cursor(room=room)
        newest = messages[-1]["id"] if messages else 0
    else:
        # Read before the messages: a change between the two is sent again on connect, never lost.
        cursor = room_cursor(room=room)
        messages, has_more = room_messages_from_around(room=room, message_id=around, context=AROUND_CONTEXT)
        newest = Message.objects.filter(room=room).order_by("-id").values_list("id", flat=True).first() or 0
    users, statuses = room_presence_statuses(slug=room.slug)
    members = room_member_names(room=room)
    marker = membership_marker(room=room, user=request.user)
    if marker is None:
        # Not a member yet: the socket makes them one with the room's past read, as it is shown here.
        marker = newest
    title = room.title
    if room.kind == protocol.KIND_DIRECT:
        title = next((name for name in members if name != me), title)
    initial = {
        "room": room.slug,
        "title": title,
        "kind": room.kind,
        "messages": messages,
        "has_more": has_more,
        "cursor": cursor,
        "around": around,
        "edit_window": settings.CHAT_EDIT_WINDOW,
        "last_read": marker or None,
        "users": users,
        "statuses": statuses,
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
        return _error(FORBIDDEN, status=403, detail="A direct room's members are fixed.")
    return redirect("chat:rooms")


@api_view("GET")
def api_rooms(request: HttpRequest) -> JsonResponse:
    """GET /api/rooms: the user's rooms with their counts and newest message, most recent activity first."""
    return JsonResponse({"rooms": rooms_of_user(user=request.user)}, json_dumps_params={"ensure_ascii": False})


# Messages shown before the one a room page opens at (?around=<id>).
AROUND_CONTEXT = 25


def _around(request: HttpRequest, room: Room) -> int | None:
    """The message a room page opens at, when ?around= names one of this room; else None (the newest)."""
    try:
        around = _optional_id(request, "around")
    except ValueError:
        return None
    if around is None or not Message.objects.filter(room=room, id=around).exists():
        return None
    return around


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
        return JsonResponse({"error": FORBIDDEN, "detail": "Only staff and the author may delete it."}, status=403)
    return JsonResponse({"deleted": message_id})


def _limit(request: HttpRequest, default: int, maximum: int) -> int:
    limit = _optional_id(request, "limit")
    if limit is None:
        return default
    if not 1 <= limit <= maximum:
        raise ValueError(f"'limit' must be between 1 and {maximum}.")
    return limit


@api_view("GET")
def search_api(request: HttpRequest) -> JsonResponse:
    """{"messages": [...], "has_more"}: messages holding every word of q, newest first, in rooms the user may read."""
    q = request.GET.get("q", "")
    if not q.strip() or len(q) > protocol.SEARCH_QUERY_MAX_CHARS:
        return _error(INVALID, f"'q' must be 1 to {protocol.SEARCH_QUERY_MAX_CHARS} characters.")
    try:
        limit = _limit(request, protocol.SEARCH_LIMIT, protocol.SEARCH_LIMIT_MAX)
    except ValueError as error:
        return _error(INVALID, str(error))
    room = None
    slug = request.GET.get("room")
    if slug:
        room = _room_or_none(request, slug)
        if room is None:
            return _error(NOT_FOUND, "No such room.", status=404)
    messages, has_more = message_search(user=request.user, q=q, room=room, limit=limit)
    return _json({"messages": messages, "has_more": has_more})


@api_view("GET")
def room_messages_api(request: HttpRequest, slug: str) -> JsonResponse:
    """?around=<id>&limit=<n>: up to n messages before that one, it, and up to n after, oldest first."""
    room = _room_or_none(request, slug)
    if room is None:
        return _error(NOT_FOUND, "No such room.", status=404)
    try:
        around = _optional_id(request, "around")
        limit = _limit(request, protocol.HISTORY_LIMIT // 2, protocol.AROUND_LIMIT_MAX)
    except ValueError as error:
        return _error(INVALID, str(error))
    if around is None:
        return _error(INVALID, "'around' must be a message id.")
    messages = room_messages_around(room=room, message_id=around, limit=limit)
    if messages is None:
        return _error(NOT_FOUND, "No such message in this room.", status=404)
    return _json({"messages": messages})


@api_view("GET")
def message_edits_api(request: HttpRequest, slug: str, message_id: int) -> JsonResponse:
    """{"edits": [{"body", "edited_at"}]}: every earlier version of a message, oldest first."""
    room = _room_or_none(request, slug)
    message = Message.objects.filter(room=room, id=message_id).first() if room is not None else None
    if message is None:
        return _error(NOT_FOUND, "No such message.", status=404)
    return _json({"edits": message_edits(message=message)})


@login_required
@require_GET
def search_page(request: HttpRequest) -> HttpResponse:
    """/chat/search/?q=: the results are fetched from /api/search by the page."""
    return render(request, "chat/search.html", {"q": request.GET.get("q", "")[: protocol.SEARCH_QUERY_MAX_CHARS]})
