from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from chat import protocol
from chat.forms import RoomForm
from chat.models import Message, Room
from chat.selectors import room_by_slug, room_history, room_list, room_presence_statuses
from chat.services import message_delete, room_create, room_open
from realtime.protocol import INVALID


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
    messages, has_more = room_history(room=room)
    users, statuses = room_presence_statuses(slug=room.slug)
    initial = {
        "room": room.slug,
        "messages": messages,
        "has_more": has_more,
        "users": users,
        "statuses": statuses,
        "me": request.user.get_username(),
        "moderator": request.user.is_staff,
    }
    return render(request, "chat/room.html", {"room": room, "initial": initial})


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
        return JsonResponse({"error": "forbidden", "detail": "Only staff and the author may delete it."}, status=403)
    return JsonResponse({"deleted": message_id})
