"""Take the characters the text validator refuses out of chat text stored before it ran.

Bodies and room titles may hold bidi overrides (U+202E...), ESC, BEL, U+0085
and other controls, which would keep showing spoofed text. Each is rewritten
as text_clean() would store it now: refused characters out, trimmed. A body
with nothing visible left is deleted, leaving the DeletedMessage trace that
chat.services.messages_delete leaves; a title with nothing visible left
becomes the room's slug.
"""

from django.db import migrations

from accounts.text import BIDI_CONTROLS, TextRefused, text_clean, text_refused_strip

CHUNK = 500

# A cheap pre-filter in SQL (a regex on PostgreSQL, Python's re on SQLite) so
# that only rows holding a refused character come back to Python. Controls are
# general category Cc, a set Unicode promises never to change: U+0000–U+001F
# and U+007F–U+009F, less tab and line breaks. Lone surrogates can't be stored
# (they are not UTF-8).
REFUSED_PATTERN = (
    r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f" + "".join(f"\\u{ord(char):04x}" for char in sorted(BIDI_CONTROLS)) + "]"
)


def _cleaned(text: str) -> str | None:
    """The text as the validator would store it now, or None when nothing visible is left."""
    stripped = text_refused_strip(text)
    try:
        return text_clean(stripped, max_chars=len(stripped))
    except TextRefused:
        return None


def strip_refused_text(apps, schema_editor) -> None:
    Room = apps.get_model("chat", "Room")
    Message = apps.get_model("chat", "Message")
    DeletedMessage = apps.get_model("chat", "DeletedMessage")

    rooms = Room.objects.filter(title__regex=REFUSED_PATTERN).only("id", "slug", "title").order_by("id")
    changed = []
    for room in rooms.iterator(chunk_size=CHUNK):
        title = _cleaned(room.title) or room.slug
        if title != room.title:
            room.title = title
            changed.append(room)
    Room.objects.bulk_update(changed, ["title"], batch_size=CHUNK)

    messages = Message.objects.filter(body__regex=REFUSED_PATTERN).only("id", "room_id", "body").order_by("id")
    # SQLite gives no isolation between the iterator's cursor and the writes
    # below: a row written may come back. Each row is handled once.
    handled: set[int] = set()
    changed, emptied = [], []
    for message in messages.iterator(chunk_size=CHUNK):
        if message.id in handled:
            continue
        handled.add(message.id)
        body = _cleaned(message.body)
        if body is None:
            emptied.append(message)
        elif body != message.body:
            message.body = body
            changed.append(message)
        if len(changed) + len(emptied) >= CHUNK:
            _store(Message, DeletedMessage, changed, emptied)
    _store(Message, DeletedMessage, changed, emptied)


def _store(Message, DeletedMessage, changed: list, emptied: list) -> None:
    Message.objects.bulk_update(changed, ["body"])
    Message.objects.filter(id__in=[message.id for message in emptied]).delete()
    # A client resuming with ?after=<id> learns of the deletion (chat.history's "deleted").
    DeletedMessage.objects.bulk_create(
        DeletedMessage(room_id=message.room_id, message_id=message.id) for message in emptied
    )
    changed.clear()
    emptied.clear()


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0002_deleted_message"),
    ]

    operations = [
        migrations.RunPython(strip_refused_text, migrations.RunPython.noop),
    ]
