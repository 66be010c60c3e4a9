"""The chat wire protocol (v1) on /ws/chat/<room>/: frame types, builders, limits, group names.

What every socket speaks (ping, errors, close codes) is in realtime.protocol;
docs/protocol.md describes both in prose.
"""

import re
from typing import Any

from realtime.protocol import INVALID, ProtocolError, iso

# The endpoint's name in logs, metrics and connection rows.
ENDPOINT = "chat"

SLUG_PATTERN = "[a-z0-9-]{1,50}"
_SLUG = re.compile(SLUG_PATTERN)

# Room kinds: anyone logged in may read a public room; only its two members a direct one.
KIND_PUBLIC = "public"
KIND_DIRECT = "direct"
# A direct room's slug names its two members' ids, lower first; no public room may take one.
_DIRECT_SLUG = re.compile(r"dm-[0-9]+-[0-9]+")

# Client → server (chat.message, chat.typing and chat.read also go server → client).
CHAT_MESSAGE = "chat.message"
CHAT_TYPING = "chat.typing"
CHAT_READ = "chat.read"

# Server → client.
CHAT_HISTORY = "chat.history"
CHAT_DELETED = "chat.deleted"
ROOM_PRESENCE = "room.presence"
# To each member's own sockets (their user group), on any endpoint.
ROOM_ACTIVITY = "room.activity"

BODY_MAX_CHARS = 2000
TITLE_MAX_CHARS = 100
CLIENT_ID_MAX_CHARS = 64
HISTORY_LIMIT = 50  # on connect, and the default page over HTTP
HISTORY_PAGE_MAX = 100  # the largest page over HTTP
RESUME_LIMIT = 500  # messages after ?after=<id>, at most
# Unread and mention counts stop here: a room with more says this many (a page shows "999+").
COUNT_MAX = 1000


def slug_is_valid(slug: str) -> bool:
    return _SLUG.fullmatch(slug) is not None


_CLIENT_ID = re.compile(f"[A-Za-z0-9._:-]{{1,{CLIENT_ID_MAX_CHARS}}}")


def client_id_is_valid(client_id: object) -> bool:
    return isinstance(client_id, str) and _CLIENT_ID.fullmatch(client_id) is not None


def client_id_echo(client_id: object) -> str | None:
    """The client_id to name in an error about a chat.message: only a well-formed one, else None."""
    return client_id if client_id_is_valid(client_id) else None


def direct_slug(user_id: int, other_id: int) -> str:
    """The slug of the direct room of two users: dm-<low id>-<high id>."""
    low, high = sorted((int(user_id), int(other_id)))
    return f"dm-{low}-{high}"


def slug_is_direct(slug: str) -> bool:
    """Whether a slug is of the direct-room form (reserved: a public room never takes it)."""
    return _DIRECT_SLUG.fullmatch(slug) is not None


def room_group(slug: str) -> str:
    """The layer group of a room; only ever built from a validated slug."""
    if not slug_is_valid(slug):
        raise ValueError(f"not a room slug: {slug!r}")
    return f"chat.room.{slug}"


def mentions_list(stored: str) -> list[str]:
    """The usernames of Message.mentions (" alice bob "), as a sorted list."""
    return stored.split()


def mentions_stored(usernames: set[str]) -> str:
    """Message.mentions for a set of usernames: sorted, space-separated, a space at each end; "" for none."""
    return f" {' '.join(sorted(usernames))} " if usernames else ""


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
        "mentions": mentions_list(message["mentions"]),
    }


def history_frame(
    room: str,
    messages: list[dict[str, Any]],
    has_more: bool,
    deleted: list[int] | None = None,
    *,
    last_read: int | None = None,
) -> dict[str, Any]:
    """The history on connect, with the reader's marker as the socket opened (None: nothing read).

    A resumed one (?after=<id>) also names the recently deleted messages.
    """
    frame = {"type": CHAT_HISTORY, "room": room, "messages": messages, "has_more": has_more, "last_read": last_read}
    if deleted is not None:
        frame["deleted"] = deleted
    return frame


def read_up_to(frame: dict[str, Any]) -> int:
    """The id of a chat.read frame's up_to, or ProtocolError: a whole number above 0 (never a bool or a float)."""
    up_to = frame.get("up_to")
    if type(up_to) is not int or not 0 < up_to < 2**63:
        raise ProtocolError(INVALID, "'up_to' must be the id of a message of this room.")
    return up_to


def read_frame(room: str, up_to: int, unread: int, mentions: int) -> dict[str, Any]:
    """A user's read marker moved: to every socket of theirs, with the room's counts after the move."""
    return {"type": CHAT_READ, "room": room, "up_to": up_to, "unread": unread, "mentions": mentions}


def activity_frame(
    *, room: str, title: str, kind: str, unread: int, mentions: int, last_read: int, message: dict[str, Any]
) -> dict[str, Any]:
    """New messages in one of a member's rooms, with that member's counts after the newest (message)."""
    return {
        "type": ROOM_ACTIVITY,
        "room": room,
        "title": title,
        "kind": kind,
        "unread": unread,
        "mentions": mentions,
        "last_read": last_read or None,
        "last_message": message,
    }


def presence_frame(room: str, usernames: list[str]) -> dict[str, Any]:
    return {"type": ROOM_PRESENCE, "room": room, "users": usernames}


def typing_frame(username: str) -> dict[str, Any]:
    return {"type": CHAT_TYPING, "username": username}


def deleted_frame(message_id: int) -> dict[str, Any]:
    return {"type": CHAT_DELETED, "id": message_id}
