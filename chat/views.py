from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from chat import protocol
from chat.forms import RoomForm
from chat.models import Message, Room
from chat.selectors import (
    message_edits,
    message_search,
    room_by_slug,
    room_cursor,
    room_history,
    room_history_cursor,
    room_list,
    room_messages_around,
    room_messages_from_around,
    room_presence_statuses,
    rooms_readable_by,
)
from chat.services import message_delete, room_create, room_open
from realtime.protocol import FORBIDDEN, INVALID

NOT_LOGGED_IN = "not_logged_in"
NOT_FOUND = "not_found"


def _valid_slug(slug: str) -> str:
    if not protocol.slug_is_valid(slug):
        raise Http404("No such room.")
    return slug


def _existing_room(slug: str) -> Room:
    room = room_by_slug(slug=_valid_slug(slug))
    if room is None:
        raise Http404("No such room.")
    return room


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
    return render(request, "chat/rooms.html", {"rooms": room_list(), "form": form})


@login_required
@require_GET
def room_page(request: HttpRequest, slug: str) -> HttpResponse:
    """A room: initial history and presence in json_script, then live over /ws/chat/<slug>/."""
    room = room_open(slug=_valid_slug(slug), user=request.user)
    around = _around(request, room)
    if around is None:
        messages, has_more, cursor = room_history_cursor(room=room)
    else:
        # Read before the messages: a change between the two is sent again on connect, never lost.
        cursor = room_cursor(room=room)
        messages, has_more = room_messages_from_around(room=room, message_id=around, context=AROUND_CONTEXT)
    users, statuses = room_presence_statuses(slug=room.slug)
    initial = {
        "room": room.slug,
        "messages": messages,
        "has_more": has_more,
        "cursor": cursor,
        "around": around,
        "edit_window": settings.CHAT_EDIT_WINDOW,
        "users": users,
        "statuses": statuses,
        "me": request.user.get_username(),
        "moderator": request.user.is_staff,
    }
    return render(request, "chat/room.html", {"room": room, "initial": initial})


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
    room = _existing_room(slug)
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
    room = _existing_room(slug)
    if not Message.objects.filter(id=message_id, room=room).exists():
        raise Http404("No such message.")
    try:
        message_delete(user=request.user, message_id=message_id)
    except Message.DoesNotExist:
        raise Http404("No such message.") from None
    except PermissionDenied:
        return JsonResponse({"error": FORBIDDEN, "detail": "Only staff and the author may delete it."}, status=403)
    return JsonResponse({"deleted": message_id})


def _json(payload: dict, status: int = 200) -> JsonResponse:
    return JsonResponse(payload, status=status, json_dumps_params={"ensure_ascii": False})


def _error(code: str, detail: str, status: int = 400) -> JsonResponse:
    return _json({"error": code, "detail": detail}, status=status)


def api_login_required(view):
    """/api/ views: an anonymous request gets 401 JSON, not a redirect to the log-in page."""

    def wrapped(request: HttpRequest, *args, **kwargs):
        if not request.user.is_authenticated:
            return _error(NOT_LOGGED_IN, "Log in first.", status=401)
        return view(request, *args, **kwargs)

    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return wrapped


def _readable_room(request: HttpRequest, slug: str) -> Room | None:
    if not protocol.slug_is_valid(slug):
        return None
    return rooms_readable_by(request.user).filter(slug=slug).first()


def _limit(request: HttpRequest, default: int, maximum: int) -> int:
    limit = _optional_id(request, "limit")
    if limit is None:
        return default
    if not 1 <= limit <= maximum:
        raise ValueError(f"'limit' must be between 1 and {maximum}.")
    return limit


@api_login_required
@require_GET
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
        room = _readable_room(request, slug)
        if room is None:
            return _error(NOT_FOUND, "No such room.", status=404)
    messages, has_more = message_search(user=request.user, q=q, room=room, limit=limit)
    return _json({"messages": messages, "has_more": has_more})


@api_login_required
@require_GET
def room_messages_api(request: HttpRequest, slug: str) -> JsonResponse:
    """?around=<id>&limit=<n>: up to n messages before that one, it, and up to n after, oldest first."""
    room = _readable_room(request, slug)
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


@api_login_required
@require_GET
def message_edits_api(request: HttpRequest, slug: str, message_id: int) -> JsonResponse:
    """{"edits": [{"body", "edited_at"}]}: every earlier version of a message, oldest first."""
    room = _readable_room(request, slug)
    message = Message.objects.filter(room=room, id=message_id).first() if room is not None else None
    if message is None:
        return _error(NOT_FOUND, "No such message.", status=404)
    return _json({"edits": message_edits(message=message)})


@login_required
@require_GET
def search_page(request: HttpRequest) -> HttpResponse:
    """/chat/search/?q=: the results are fetched from /api/search by the page."""
    return render(request, "chat/search.html", {"q": request.GET.get("q", "")[: protocol.SEARCH_QUERY_MAX_CHARS]})
