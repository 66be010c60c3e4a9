"""text_clean(): the one validator for user text; text_refused_strip() for text stored before it ran."""

import json

import pytest

from accounts.text import TextRefused, emoji_clean, text_clean, text_refused_strip

VALID = [
    "hello",
    "👩‍👩‍👧‍👦 family",  # 4-byte emoji joined by zero-width joiners
    "🎉",
    "e\u0301 and a\u0308\u0323",  # combining marks, not normalized
    "שלום עולם",  # right-to-left letters
    "مرحبا",
    "نمی\u200cخواهم",  # zero-width non-joiner, needed in Persian
    "line one\nline two\ttabbed",
    "a\u200bb",  # a zero-width space between visible letters
]

# Every character the validator refuses but the lone surrogates (tested apart:
# most string operations can't carry them): C0 controls but tab and line
# breaks, DEL and the C1 controls, the bidi embeddings, overrides and isolates.
REFUSED_CHARS = [
    chr(point)
    for point in [*range(0x00, 0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
    if chr(point) not in "\t\n\r"
]


@pytest.mark.parametrize("text", VALID)
def test_valid_text_is_returned_unchanged(text):
    assert text_clean(text, max_chars=2000) == text


def test_text_is_trimmed():
    assert text_clean("  hi there \n", max_chars=10) == "hi there"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("nul\x00byte", "control character (U+0000)"),
        ("bell\x07", "control character (U+0007)"),
        ("esc\x1b[31m", "control character (U+001B)"),
        ("del\x7f", "control character (U+007F)"),
        ("c1\x85", "control character (U+0085)"),
        ("lone \ud800 high", "lone surrogate"),
        ("lone \udfff low", "lone surrogate"),
        ("evil\u202etxt.exe", "bidirectional"),
        ("isolate\u2066x\u2069", "bidirectional"),
        ("", "is empty"),
        ("   \n\t ", "is empty"),
        ("\u200b\u200d\u2060", "is empty"),  # only zero-width characters
        ("\u0301\u0308", "is empty"),  # only combining marks
        (None, "must be a string"),
        (42, "must be a string"),
        (["a"], "must be a string"),
        (b"bytes", "must be a string"),
    ],
)
def test_bad_text_is_refused_with_a_sentence_that_says_why(value, fragment):
    with pytest.raises(TextRefused) as raised:
        text_clean(value, max_chars=2000)
    assert fragment in str(raised.value)


def test_a_refusal_is_a_value_error_that_names_the_field():
    with pytest.raises(ValueError, match="^'title' is empty.$"):
        text_clean(" ", max_chars=100, field="title")


def test_length_counts_code_points_not_bytes_or_utf16_units():
    assert text_clean("🎉" * 5, max_chars=5) == "🎉" * 5
    with pytest.raises(TextRefused, match="longer than 5 characters"):
        text_clean("🎉" * 6, max_chars=5)


def test_length_is_counted_after_trimming():
    assert text_clean("  abc  ", max_chars=3) == "abc"


def test_min_chars_zero_lets_empty_text_through_but_not_invisible_text():
    assert text_clean("  ", max_chars=10, min_chars=0) == ""
    with pytest.raises(TextRefused, match="holds nothing visible"):
        text_clean("\u200b\u200d", max_chars=10, min_chars=0)


@pytest.mark.parametrize("value", ["🎉", "👩\u200d👩\u200d👧\u200d👦", "🇫🇷", "👍🏽", "❤️"])
def test_one_emoji_is_kept_byte_for_byte(value):
    assert emoji_clean(value) == value


@pytest.mark.parametrize("value", ["🎉🎉", "a", ":)", "🎉 ", "", None, 5, "x" * 40])
def test_anything_but_one_emoji_is_refused(value):
    with pytest.raises(TextRefused, match="one emoji|must be a string"):
        emoji_clean(value)


def test_an_empty_emoji_is_allowed_where_asked():
    assert emoji_clean("", allow_empty=True) == ""


def test_min_chars_is_a_lower_bound_in_code_points():
    assert text_clean("🎉🎉", max_chars=10, min_chars=2) == "🎉🎉"
    with pytest.raises(TextRefused, match="is empty"):
        text_clean("🎉", max_chars=10, min_chars=2)


def test_a_lone_surrogate_from_a_json_escape_is_refused():
    # JSON escapes can smuggle a surrogate that UTF-8 could never carry.
    frame = json.loads('{"type": "chat.message", "body": "x\\ud83dy"}')
    with pytest.raises(TextRefused, match="surrogate"):
        text_clean(frame["body"], max_chars=2000)


@pytest.mark.parametrize("char", REFUSED_CHARS, ids=lambda char: f"U+{ord(char):04X}")
def test_every_refused_character_is_stripped_and_the_rest_kept(char):
    stripped = text_refused_strip(f"a{char}b{char}")
    assert stripped == "ab"
    assert text_clean(stripped, max_chars=10) == "ab"


def test_no_other_character_is_stripped():
    refused = set(REFUSED_CHARS)
    others = "".join(
        chr(point) for point in range(0x110000) if not 0xD800 <= point <= 0xDFFF and chr(point) not in refused
    )
    assert text_refused_strip(others) == others


def test_strip_takes_out_lone_surrogates():
    assert text_refused_strip("x\ud83dy\udfff") == "xy"


def test_strip_makes_spoofed_text_read_as_stored():
    assert text_refused_strip("invoice\u202efdp.exe") == "invoicefdp.exe"
    assert text_refused_strip("\x1b[2Jcleared\x07") == "[2Jcleared"


@pytest.mark.parametrize("text", [*VALID, "  padded  ", "", "\u200b", "a\r\nb"])
def test_strip_keeps_text_the_validator_accepts_as_it_is(text):
    # No trimming and no normalization: only refused characters go.
    assert text_refused_strip(text) == text


def test_strip_can_leave_text_the_validator_calls_empty():
    stripped = text_refused_strip("\u202e\u200b\x07")
    assert stripped == "\u200b"
    with pytest.raises(TextRefused, match="is empty"):
        text_clean(stripped, max_chars=10)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "text",
    ["👩‍👩‍👧‍👦", "e\u0301\u0308\u0323", "שלום", "a\u200bb\u200cc\u200dd", "\U0001f600\U00010348"],
)
def test_accepted_text_is_stored_byte_exact(make_user, text):
    # The same on SQLite and PostgreSQL (the suite runs on both); NUL, which
    # only SQLite could store, never gets this far.
    user = make_user("alice", first_name=text_clean(text, max_chars=150))
    user.refresh_from_db()
    assert user.first_name.encode("utf-8") == text.encode("utf-8")
