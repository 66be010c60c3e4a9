"""The chat wire protocol (v1) on /ws/chat/<room>/: frame types, builders, limits, group names.

What every socket speaks (ping, errors, close codes) is in realtime.protocol;
docs/protocol.md describes both in prose.
"""

import re
from typing import Any

from realtime.protocol import iso

# The endpoint's name in logs, metrics and connection rows.
ENDPOINT = "chat"

SLUG_PATTERN = "[a-z0-9-]{1,50}"
_SLUG = re.compile(SLUG_PATTERN)

# Client → server (chat.message and chat.typing also go server → client).
CHAT_MESSAGE = "chat.message"
CHAT_TYPING = "chat.typing"

# Server → client.
CHAT_HISTORY = "chat.history"
CHAT_DELETED = "chat.deleted"
ROOM_PRESENCE = "room.presence"

BODY_MAX_CHARS = 2000
TITLE_MAX_CHARS = 100
CLIENT_ID_MAX_CHARS = 64
HISTORY_LIMIT = 50  # on connect, and the default page over HTTP
HISTORY_PAGE_MAX = 100  # the largest page over HTTP
RESUME_LIMIT = 500  # messages after ?after=<id>, at most


def slug_is_valid(slug: str) -> bool:
    return _SLUG.fullmatch(slug) is not None


_CLIENT_ID = re.compile(f"[A-Za-z0-9._:-]{{1,{CLIENT_ID_MAX_CHARS}}}")


def client_id_is_valid(client_id: object) -> bool:
    return isinstance(client_id, str) and _CLIENT_ID.fullmatch(client_id) is not None


def client_id_echo(client_id: object) -> str | None:
    """The client_id to name in an error about a chat.message: only a well-formed one, else None."""
    return client_id if client_id_is_valid(client_id) else None


def room_group(slug: str) -> str:
    """The layer group of a room; only ever built from a validated slug."""
    if not slug_is_valid(slug):
        raise ValueError(f"not a room slug: {slug!r}")
    return f"chat.room.{slug}"


def message_frame(message: dict[str, Any]) -> dict[str, Any]:
    """A stored message, from a row of selectors.MESSAGE_FIELDS."""
    return {
        "type": CHAT_MESSAGE,
        "id": message["id"],
        "room": message["room__slug"],
        "username": message["author__username"],
        "body": message["body"],
        "sent_at": iso(message["sent_at"]),
        "client_id": message["client_id"],
    }


def history_frame(
    room: str, messages: list[dict[str, Any]], has_more: bool, deleted: list[int] | None = None
) -> dict[str, Any]:
    """The history on connect; a resumed one (?after=<id>) also names the recently deleted messages."""
    frame = {"type": CHAT_HISTORY, "room": room, "messages": messages, "has_more": has_more}
    if deleted is not None:
        frame["deleted"] = deleted
    return frame


def presence_frame(room: str, usernames: list[str], statuses: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everyone shown in the room now; statuses: {username: status} of those of them who set one."""
    return {"type": ROOM_PRESENCE, "room": room, "users": usernames, "statuses": statuses or {}}


def typing_frame(username: str) -> dict[str, Any]:
    return {"type": CHAT_TYPING, "username": username}


def deleted_frame(message_id: int) -> dict[str, Any]:
    return {"type": CHAT_DELETED, "id": message_id}
