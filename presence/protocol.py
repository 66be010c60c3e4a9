"""The presence wire protocol (v1): frame types, builders, error and close codes.

docs/protocol.md describes the same in prose; consumers never assemble frames inline.
"""

import json
import unicodedata
from datetime import UTC, datetime
from typing import Any

# Client → server frame types.
PING = "ping"
PRESENCE_STATE = "presence.state"

# Server → client frame types.
PONG = "pong"
ERROR = "error"
PRESENCE_SNAPSHOT = "presence.snapshot"
PRESENCE_DIFF = "presence.diff"

# {"type": "presence.state", "state": ...} from a tab, and the user states watchers see.
TAB_IDLE = "idle"
TAB_ACTIVE = "active"
TAB_STATES = (TAB_IDLE, TAB_ACTIVE)
USER_ONLINE = "online"
USER_AWAY = "away"

# Error codes, sent in {"type": "error", "code": ...} with the socket left open.
BAD_JSON = "bad_json"
INVALID = "invalid"
UNKNOWN_TYPE = "unknown_type"
RATE_LIMITED = "rate_limited"
UNAVAILABLE = "unavailable"

# Close codes. Every one of them is sent after accept(), so a browser can read it.
CLOSE_UNSUPPORTED_DATA = 1003  # a binary frame
CLOSE_POLICY_VIOLATION = 1008  # kept flooding after rate_limited
CLOSE_TOO_LARGE = 1009  # a text frame over MAX_FRAME_CHARS
# The database or the channel layer is down, hung or restarted: reconnect with backoff and resync.
# Not 1013: autobahn (under Daphne) refuses to send any code but 1000 and 3000-4999.
CLOSE_TRY_AGAIN_LATER = 4503
CLOSE_SESSION_ENDED = 4000  # log-out in that browser, a password change, or an admin ended it
CLOSE_NOT_LOGGED_IN = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_MANY_SOCKETS = 4429

MAX_FRAME_CHARS = 65536

# Channel-layer groups and event types. Group names are built only from
# constants or validated slugs: layer names are ASCII [a-zA-Z0-9-_.], < 100 chars.
PRESENCE_GROUP = "presence"
EVENT_FORWARD = "frame.forward"  # {"text": <serialized frame>, "skip": <channel name or None>}
EVENT_SESSION_END = "session.end"


class ProtocolError(Exception):
    """A frame that can't be accepted; answered with an error frame, socket open.

    client_id, when set, names the refused chat.message in the error frame, so
    that a client with several messages in flight knows which one failed.
    """

    def __init__(self, code: str, detail: str, *, client_id: str | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.client_id = client_id


def iso(moment: datetime | None) -> str | None:
    """An aware datetime as ISO 8601 UTC with a Z, or None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def dumps(frame: dict[str, Any]) -> str:
    # ensure_ascii=False keeps emoji and other text byte-exact and compact.
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


def decode_frame(text: str) -> dict[str, Any]:
    """Parse one client text frame into an object with a string type, or raise ProtocolError."""
    try:
        frame = json.loads(text)
    except ValueError:
        raise ProtocolError(BAD_JSON, "The frame is not valid JSON.") from None
    if not isinstance(frame, dict):
        raise ProtocolError(INVALID, "A frame must be a JSON object.")
    frame_type = frame.get("type")
    if not isinstance(frame_type, str) or not frame_type:
        raise ProtocolError(INVALID, "A frame needs a string 'type'.")
    return frame


def error_frame(code: str, detail: str, client_id: str | None = None) -> dict[str, Any]:
    frame = {"type": ERROR, "code": code, "detail": detail}
    if client_id is not None:
        frame["client_id"] = client_id
    return frame


def pong_frame() -> dict[str, Any]:
    return {"type": PONG}


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


def session_end_event(reason: str) -> dict[str, Any]:
    """A layer event that closes one socket with 4000; the reason is only logged."""
    return {"type": EVENT_SESSION_END, "reason": reason}


def forward_event(frame: dict[str, Any], *, skip: str | None = None) -> dict[str, Any]:
    """A layer event carrying a frame serialized once for every receiver."""
    return {"type": EVENT_FORWARD, "text": dumps(frame), "skip": skip}


# Characters refused in user text. Control characters other than tab and line
# breaks (NUL among them: PostgreSQL cannot store it, SQLite can, so refusing
# it keeps both databases alike), and the explicit bidirectional embeddings,
# overrides and isolates, which can make text display differently from what it
# holds ("Trojan Source"). Right-to-left letters themselves are welcome.
_ALLOWED_CONTROLS = frozenset("\t\n\r")
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Visible-content test: text made only of these is as good as empty.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Mn", "Me", "Zs", "Zl", "Zp", "Cc"})


def clean_text(value: Any, *, max_chars: int, min_chars: int = 1, field: str = "body") -> str:
    """Validate user text from a frame; return it trimmed, else raise ProtocolError (invalid).

    Lengths count Unicode code points, so a 4-byte emoji is one character.
    Valid text is returned unchanged apart from the trim (no normalization:
    combining marks, zero-width joiners and emoji are stored byte-exact).
    """
    if not isinstance(value, str):
        raise ProtocolError(INVALID, f"'{field}' must be a string.")
    for char in value:
        if "\ud800" <= char <= "\udfff":
            raise ProtocolError(INVALID, f"'{field}' holds a lone surrogate, which is not text.")
        if char in _BIDI_CONTROLS:
            raise ProtocolError(INVALID, f"'{field}' holds a bidirectional override or isolate character.")
        if char not in _ALLOWED_CONTROLS and unicodedata.category(char) == "Cc":
            raise ProtocolError(INVALID, f"'{field}' holds a control character (U+{ord(char):04X}).")
    text = value.strip()
    if len(text) > max_chars:
        raise ProtocolError(INVALID, f"'{field}' is longer than {max_chars} characters.")
    if len(text) < min_chars or (
        min_chars > 0 and all(unicodedata.category(char) in _INVISIBLE_CATEGORIES for char in text)
    ):
        raise ProtocolError(INVALID, f"'{field}' is empty.")
    return text
