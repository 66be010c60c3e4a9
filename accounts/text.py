"""The one validator for user text: chat bodies and edits, room names, status text.

Every piece of text a person types goes through text_clean() before it is
stored: from a socket frame, a form or the admin. Valid text comes back
trimmed and otherwise byte for byte (no normalization: combining marks,
zero-width joiners, right-to-left letters and emoji are kept as typed).
"""

import unicodedata
from typing import Any

# The emoji package keeps Unicode's emoji data (sequences, modifiers, flags, ZWJ families) up to date: a single
# emoji can be 1 to 10 code points, which no hand-written check gets right.
import emoji as emoji_data

# Control characters other than tab and line breaks (NUL among them:
# PostgreSQL cannot store it, SQLite can, so refusing it keeps both databases
# alike), and the explicit bidirectional embeddings, overrides and isolates,
# which make text display differently from what it holds ("Trojan Source":
# "invoice\u202efdp.exe" shows as "invoiceexe.pdf"). Right-to-left letters
# themselves are welcome.
_ALLOWED_CONTROLS = frozenset("\t\n\r")
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Visible-content test: text made only of these (zero-width and other format
# characters, combining marks alone, spaces, controls) is as good as empty.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Mn", "Me", "Zs", "Zl", "Zp", "Cc"})


class TextRefused(ValueError):
    """User text that the validator refuses; str() is a sentence to show the user."""


def _refusal(char: str) -> str | None:
    if "\ud800" <= char <= "\udfff":
        return "holds a lone surrogate, which is not text"
    if char in BIDI_CONTROLS:
        return "holds a bidirectional override or isolate character"
    if char not in _ALLOWED_CONTROLS and unicodedata.category(char) == "Cc":
        return f"holds a control character (U+{ord(char):04X})"
    return None


def text_clean(value: Any, *, max_chars: int, min_chars: int = 1, field: str = "body") -> str:
    """Validate user text; return it trimmed, else raise TextRefused.

    Lengths count Unicode code points, so a 4-byte emoji is one character.
    """
    if not isinstance(value, str):
        raise TextRefused(f"'{field}' must be a string.")
    for char in value:
        reason = _refusal(char)
        if reason is not None:
            raise TextRefused(f"'{field}' {reason}.")
    text = value.strip()
    if len(text) > max_chars:
        raise TextRefused(f"'{field}' is longer than {max_chars} characters.")
    # Text of nothing but invisible characters is empty, also where empty is allowed (a status text): it would
    # show as nothing while holding something.
    if len(text) < min_chars or (text and all(unicodedata.category(char) in _INVISIBLE_CATEGORIES for char in text)):
        raise TextRefused(f"'{field}' is empty." if min_chars else f"'{field}' holds nothing visible.")
    return text


def emoji_clean(value: Any, *, field: str = "emoji", allow_empty: bool = False) -> str:
    """One emoji (a ZWJ sequence, a flag, a skin tone included), or "" where allowed; else raise TextRefused."""
    if not isinstance(value, str):
        raise TextRefused(f"'{field}' must be a string.")
    if value == "" and allow_empty:
        return value
    if len(value) > 16 or not emoji_data.is_emoji(value):
        raise TextRefused(f"'{field}' must be one emoji.")
    return value


def text_refused_strip(value: str) -> str:
    """The text with every character the validator refuses taken out (for rows stored before it ran)."""
    return "".join(char for char in value if _refusal(char) is None)
