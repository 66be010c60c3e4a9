"""The presence wire protocol on /ws/presence/: frame types, builders, the group.

What every socket speaks (ping, errors, close codes) is in realtime.protocol;
docs/protocol.md describes both in prose. Consumers never assemble frames inline.
"""

from datetime import UTC, datetime
from typing import Any

from accounts.text import TextRefused, emoji_clean, text_clean
from realtime.protocol import FORBIDDEN, INVALID, ProtocolError, iso

# Client → server.
PRESENCE_STATE = "presence.state"
STATUS_SET = "status.set"

# Server → client.
PRESENCE_SNAPSHOT = "presence.snapshot"
PRESENCE_DIFF = "presence.diff"
PRESENCE_STATUS = "presence.status"

STATUS_TEXT_MAX_CHARS = 80

# {"type": "presence.state", "state": ...} from a tab.
TAB_IDLE = "idle"
TAB_ACTIVE = "active"
TAB_STATES = (TAB_IDLE, TAB_ACTIVE)

# The channel-layer group of every presence watcher.
PRESENCE_GROUP = "presence"


def user_group(user_id: int) -> str:
    """The group of every socket of one user, on any endpoint and process (their own frames: other tabs, devices)."""
    return f"presence.user.{int(user_id)}"


def snapshot_frame(users: list[dict[str, Any]], recent: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """users: who is online now; recent: offline users, most recently seen first (a page resyncs from both)."""
    frame = {"type": PRESENCE_SNAPSHOT, "online_count": len(users), "users": users}
    if recent is not None:
        frame["recent"] = recent
    return frame


def diff_frame(
    joins: list[dict[str, Any]],
    leaves: list[dict[str, Any]],
    online_count: int,
    states: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """states: [{"username", "state": "away" | "online"}] for online users whose idle state changed."""
    return {
        "type": PRESENCE_DIFF,
        "joins": joins,
        "leaves": leaves,
        "states": states or [],
        "online_count": online_count,
    }


def tab_state(frame: dict[str, Any]) -> bool:
    """The idle flag of a presence.state frame, or raise ProtocolError."""
    state = frame.get("state")
    if state not in TAB_STATES:
        raise ProtocolError(INVALID, '\'state\' must be "idle" or "active".')
    return state == TAB_IDLE


def _status_bool(frame: dict[str, Any], name: str) -> bool:
    value = frame[name]
    if not isinstance(value, bool):
        raise ProtocolError(INVALID, f"'{name}' must be true or false.")
    return value


def _status_expiry(value: Any, *, now: datetime) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise ProtocolError(INVALID, "'expires_at' must be an ISO 8601 time or null.")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ProtocolError(INVALID, "'expires_at' must be an ISO 8601 time or null.") from None
    if moment.tzinfo is None:
        raise ProtocolError(INVALID, "'expires_at' needs a time zone (Z or an offset).")
    if moment <= now:
        raise ProtocolError(INVALID, "'expires_at' must be in the future.")
    return moment.astimezone(UTC)


def status_fields(frame: dict[str, Any], *, allow_invisible: bool, now: datetime) -> dict[str, Any]:
    """The fields of a status.set frame that it carries, validated; ProtocolError (nothing changed) for any bad one.

    Every field is optional; unknown fields are ignored.
    """
    fields: dict[str, Any] = {}
    try:
        if "text" in frame:
            fields["text"] = text_clean(frame["text"], max_chars=STATUS_TEXT_MAX_CHARS, min_chars=0, field="text")
        if "emoji" in frame:
            fields["emoji"] = emoji_clean(frame["emoji"], allow_empty=True)
    except TextRefused as refused:
        raise ProtocolError(INVALID, str(refused)) from None
    if "expires_at" in frame:
        fields["expires_at"] = _status_expiry(frame["expires_at"], now=now)
    for name in ("dnd", "invisible"):
        if name in frame:
            fields[name] = _status_bool(frame, name)
    if fields.get("invisible") and not allow_invisible:
        raise ProtocolError(FORBIDDEN, "Invisible mode is turned off on this server.")
    return fields


def status_payload(status: Any) -> dict[str, Any] | None:
    """{"text", "emoji", "expires_at", "dnd"} of a presence.services.Status, or None."""
    if status is None:
        return None
    return {"text": status.text, "emoji": status.emoji, "expires_at": iso(status.expires_at), "dnd": status.dnd}


def status_frame(username: str, status: Any, *, invisible: bool | None = None) -> dict[str, Any]:
    """A user's status changed; the user's own sockets also learn whether they are invisible."""
    frame = {"type": PRESENCE_STATUS, "username": username, "status": status_payload(status)}
    if invisible is not None:
        frame["invisible"] = invisible
    return frame
