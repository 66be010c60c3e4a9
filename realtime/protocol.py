"""What every socket speaks, whatever its endpoint: ping, errors, close codes, frame decoding, layer events.

Domain apps add their own frame types in their own protocol.py;
docs/protocol.md describes the same in prose. Consumers never assemble frames inline.
"""

import json
from datetime import UTC, datetime
from typing import Any

# Client → server.
PING = "ping"

# Server → client.
PONG = "pong"
ERROR = "error"

# Error codes, sent in {"type": "error", "code": ...} with the socket left open.
BAD_JSON = "bad_json"
INVALID = "invalid"
UNKNOWN_TYPE = "unknown_type"
RATE_LIMITED = "rate_limited"
UNAVAILABLE = "unavailable"
FORBIDDEN = "forbidden"

# Close codes. Every one of them is sent after accept(), so a browser can read it.
CLOSE_UNSUPPORTED_DATA = 1003  # a binary frame
CLOSE_POLICY_VIOLATION = 1008  # kept flooding after rate_limited
CLOSE_TOO_LARGE = 1009  # a text frame over MAX_FRAME_CHARS
CLOSE_SERVICE_RESTART = 1012  # the process is shutting down (a deploy): reconnect at once, elsewhere
# The database or the channel layer is down, hung or restarted: reconnect with backoff and resync.
# Not 1013: autobahn (under Daphne) refuses to send any code but 1000 and 3000-4999.
CLOSE_TRY_AGAIN_LATER = 4503
CLOSE_SESSION_ENDED = 4000  # log-out in that browser, a password change, or an admin ended it
CLOSE_NOT_LOGGED_IN = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_MANY_SOCKETS = 4429

MAX_FRAME_CHARS = 65536
# Arrays and objects nested deeper than this are refused as bad_json before
# json.loads sees them: its recursion would end in a RecursionError (a 1011).
MAX_FRAME_DEPTH = 32

# Channel-layer event types. Group names are built only from constants or
# validated slugs: layer names are ASCII [a-zA-Z0-9-_.], < 100 chars.
EVENT_FORWARD = "frame.forward"  # {"text": <serialized frame>, "skip": <socket address or None>, "group": <name>}
EVENT_SESSION_END = "session.end"
# {"frames": {<socket address>: <serialized frame>}}: a different frame for each of many sockets of one process,
# in one layer message to its inbox (realtime.fanout.send_to_sockets).
EVENT_FORWARD_EACH = "frames.forward"


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


def _too_deep(text: str) -> bool:
    """Whether brackets outside strings nest deeper than MAX_FRAME_DEPTH (a linear scan, no recursion)."""
    if text.count("[") + text.count("{") <= MAX_FRAME_DEPTH:
        return False
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_FRAME_DEPTH:
                return True
        elif char in "]}":
            depth -= 1
    return False


def decode_frame(text: str) -> dict[str, Any]:
    """Parse one client text frame into an object with a string type, or raise ProtocolError."""
    if _too_deep(text):
        raise ProtocolError(BAD_JSON, f"The frame nests deeper than {MAX_FRAME_DEPTH} levels.")
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
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


def session_end_event(reason: str) -> dict[str, Any]:
    """A layer event that closes one socket with 4000; the reason is only logged."""
    return {"type": EVENT_SESSION_END, "reason": reason}


def forward_event(frame: dict[str, Any], *, group: str, skip: str | None = None) -> dict[str, Any]:
    """A layer event carrying a frame serialized once for every receiver in group (each process's inbox hears it)."""
    return {"type": EVENT_FORWARD, "text": dumps(frame), "skip": skip, "group": group}


def forward_each_event(frames: dict[str, str]) -> dict[str, Any]:
    """A layer event carrying one serialized frame per socket address, all of one process."""
    return {"type": EVENT_FORWARD_EACH, "frames": frames}
