"""clean_text(): the one validator for user text in frames, and how databases keep what it accepts."""

import pytest

from presence import protocol
from presence.protocol import ProtocolError, clean_text


@pytest.mark.parametrize(
    "text",
    [
        "hello",
        "👩‍👩‍👧‍👦 family",  # 4-byte emoji joined by zero-width joiners
        "🎉",
        "e\u0301 and a\u0308\u0323",  # combining marks, not normalized
        "שלום עולם",  # right-to-left letters
        "مرحبا",
        "نمی\u200cخواهم",  # zero-width non-joiner, needed in Persian
        "line one\nline two\ttabbed",
        "a\u200bb",  # a zero-width space between visible letters
    ],
)
def test_valid_text_is_returned_unchanged(text):
    assert clean_text(text, max_chars=2000) == text


def test_text_is_trimmed():
    assert clean_text("  hi there \n", max_chars=10) == "hi there"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("nul\x00byte", "control character (U+0000)"),
        ("bell\x07", "control character"),
        ("del\x7f", "control character"),
        ("c1\x85", "control character"),
        ("lone \ud800 high", "lone surrogate"),
        ("lone \udfff low", "lone surrogate"),
        ("evil\u202etxt.exe", "bidirectional"),
        ("isolate\u2066x\u2069", "bidirectional"),
        ("", "empty"),
        ("   \n\t ", "empty"),
        ("\u200b\u200d\u2060", "empty"),  # only zero-width characters
        ("\u0301\u0308", "empty"),  # only combining marks
        (None, "must be a string"),
        (42, "must be a string"),
        (["a"], "must be a string"),
    ],
)
def test_bad_text_is_refused_as_invalid(value, fragment):
    with pytest.raises(ProtocolError) as raised:
        clean_text(value, max_chars=2000)
    assert raised.value.code == protocol.INVALID
    assert fragment in raised.value.detail


def test_length_counts_code_points_not_bytes_or_utf16_units():
    assert clean_text("🎉" * 5, max_chars=5) == "🎉" * 5
    with pytest.raises(ProtocolError, match="longer than 5"):
        clean_text("🎉" * 6, max_chars=5)


def test_a_lone_surrogate_from_a_json_escape_is_refused():
    # JSON escapes can smuggle a surrogate that UTF-8 could never carry.
    frame = protocol.decode_frame('{"type": "chat.message", "body": "x\\ud83dy"}')
    with pytest.raises(ProtocolError, match="surrogate"):
        clean_text(frame["body"], max_chars=2000)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "text",
    ["👩‍👩‍👧‍👦", "e\u0301\u0308\u0323", "שלום", "a\u200bb\u200cc\u200dd", "\U0001f600\U00010348"],
)
def test_accepted_text_is_stored_byte_exact(make_user, text):
    # The same on SQLite and PostgreSQL (the suite runs on both); NUL, which
    # only SQLite could store, never gets this far.
    user = make_user("alice", first_name=clean_text(text, max_chars=150))
    user.refresh_from_db()
    assert user.first_name.encode("utf-8") == text.encode("utf-8")
