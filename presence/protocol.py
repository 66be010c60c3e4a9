"""The presence wire protocol on /ws/presence/: frame types, builders, the group.

What every socket speaks (ping, errors, close codes) is in realtime.protocol;
docs/protocol.md describes both in prose. Consumers never assemble frames inline.
"""

from typing import Any

from realtime.protocol import INVALID, ProtocolError

# Client → server.
PRESENCE_STATE = "presence.state"

# Server → client.
PRESENCE_SNAPSHOT = "presence.snapshot"
PRESENCE_DIFF = "presence.diff"

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
