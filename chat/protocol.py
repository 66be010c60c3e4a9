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
# Paths under /chat/ that are pages, not rooms: no room may take these slugs.
RESERVED_SLUGS = frozenset({"search"})

# Room kinds: anyone logged in may read a public room; only its two members a direct one.
KIND_PUBLIC = "public"
KIND_DIRECT = "direct"
# A direct room's slug names its two members' ids, lower first; no public room may take one.
_DIRECT_SLUG = re.compile(r"dm-[0-9]+-[0-9]+")

# Client → server (chat.message, chat.typing and chat.read also go server → client).
CHAT_MESSAGE = "chat.message"
CHAT_TYPING = "chat.typing"
CHAT_EDIT = "chat.edit"
CHAT_REACT = "chat.react"
CHAT_READ = "chat.read"

# Server → client.
CHAT_HISTORY = "chat.history"
CHAT_DELETED = "chat.deleted"
CHAT_EDITED = "chat.edited"
CHAT_REACTIONS = "chat.reactions"
ROOM_PRESENCE = "room.presence"
# To each member's own sockets (their user group), on any endpoint.
ROOM_ACTIVITY = "room.activity"

BODY_MAX_CHARS = 2000
TITLE_MAX_CHARS = 100
CLIENT_ID_MAX_CHARS = 64
HISTORY_LIMIT = 50  # on connect, and the default page over HTTP
HISTORY_PAGE_MAX = 100  # the largest page over HTTP
RESUME_LIMIT = 500  # messages after ?after=<id> or ?cursor=<c>, at most
SEARCH_QUERY_MAX_CHARS = 200
SEARCH_LIMIT = 20  # the default page of /api/search
SEARCH_LIMIT_MAX = 50
AROUND_LIMIT_MAX = 50
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


_CURSOR = re.compile(r"([0-9]{1,18})\.([0-9]{1,18})")


def cursor(room_id: int, seq: int) -> str:
    """The opaque resume point after change `seq` of a room: "<room id>.<seq>"."""
    return f"{room_id}.{seq}"


def cursor_parse(value: object) -> tuple[int, int] | None:
    """(room id, seq) of a cursor; None when it is not one."""
    if not isinstance(value, str):
        return None
    match = _CURSOR.fullmatch(value)
    return (int(match[1]), int(match[2])) if match else None


def mentions_list(stored: str) -> list[str]:
    """The usernames of Message.mentions (" alice bob "), as a sorted list."""
    return stored.split()


def mentions_stored(usernames: set[str]) -> str:
    """Message.mentions for a set of usernames: sorted, space-separated, a space at each end; "" for none."""
    return f" {' '.join(sorted(usernames))} " if usernames else ""


def message_frame(
    message: dict[str, Any], reactions: list[dict[str, Any]] | None = None, cursor: str | None = None
) -> dict[str, Any]:
    """A stored message, from a row of selectors.MESSAGE_FIELDS; live ones carry the room's cursor."""
    frame = {
        "type": CHAT_MESSAGE,
        "id": message["id"],
        "room": message["room__slug"],
        "username": message["author__username"],
        "body": message["body"],
        "sent_at": iso(message["sent_at"]),
        "client_id": message["client_id"],
        "html": message["html"],
        "edited_at": iso(message["edited_at"]) if message["edited_at"] else None,
        "reactions": reactions if reactions is not None else message.get("reaction_summary") or [],
        "mentions": mentions_list(message.get("mentions") or ""),
    }
    if cursor is not None:
        frame["cursor"] = cursor
    return frame


def edited_frame(room: str, message: dict[str, Any], cursor: str | None = None) -> dict[str, Any]:
    """A message's new body, from a row with id, body, html and edited_at."""
    frame = {
        "type": CHAT_EDITED,
        "room": room,
        "id": message["id"],
        "body": message["body"],
        "html": message["html"],
        "edited_at": iso(message["edited_at"]),
    }
    if cursor is not None:
        frame["cursor"] = cursor
    return frame


def reactions_frame(room: str, message_id: int, reactions: list[dict[str, Any]], cursor: str | None = None):
    """A message's whole current list of reactions: [{"emoji", "users": [sorted]}], first reacted first."""
    frame = {"type": CHAT_REACTIONS, "room": room, "id": message_id, "reactions": reactions}
    if cursor is not None:
        frame["cursor"] = cursor
    return frame


def edit_version(body: str, edited_at) -> dict[str, Any]:
    """One earlier version in /api/rooms/<slug>/messages/<id>/edits."""
    return {"body": body, "edited_at": iso(edited_at)}


def history_frame(
    room: str,
    messages: list[dict[str, Any]],
    has_more: bool,
    deleted: list[int] | None = None,
    *,
    last_read: int | None = None,
    cursor: str | None = None,
    changes: list[dict[str, Any]] | None = None,
    reset: bool = False,
) -> dict[str, Any]:
    """The history on connect, with the reader's marker as the socket opened (None: nothing read).

    A resumed one (?after=<id>) also names the recently deleted messages. One
    resumed with ?cursor=<c> lists the changes to older messages as their live
    frames; reset says the cursor was too old and these are the last messages.
    """
    frame = {"type": CHAT_HISTORY, "room": room, "messages": messages, "has_more": has_more, "last_read": last_read}
    if deleted is not None:
        frame["deleted"] = deleted
    if cursor is not None:
        frame["cursor"] = cursor
    if changes is not None:
        frame["changes"] = changes
    if reset:
        frame["reset"] = True
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


def presence_frame(room: str, usernames: list[str], statuses: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everyone shown in the room now; statuses: {username: status} of those of them who set one."""
    return {"type": ROOM_PRESENCE, "room": room, "users": usernames, "statuses": statuses or {}}


def typing_frame(username: str) -> dict[str, Any]:
    return {"type": CHAT_TYPING, "username": username}


def deleted_frame(message_id: int, room: str | None = None, cursor: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": CHAT_DELETED, "id": message_id}
    if room is not None:
        frame["room"] = room
    if cursor is not None:
        frame["cursor"] = cursor
    return frame
