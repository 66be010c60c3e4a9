"""Full-text search of message bodies: PostgreSQL's (a stored tsvector, GIN), SQLite's FTS5 in the embedded default.

Both use plain word matching (case folded, accents kept, no stemming, no
language), so a query finds the same messages on either database. The index and the FTS5 table (with the
triggers that keep it in step with chat_message) come from migration 0004.
"""

import re

from django.db import connection
from django.db.models import BooleanField, QuerySet
from django.db.models.expressions import RawSQL

from chat.models import Message

# The text search configuration of the PostgreSQL index: words as written, lower-cased.
PG_CONFIG = "simple"
# A stored tsvector, not an expression index: for "the newest 20 matches" the planner often walks the
# primary key backwards and filters, and recomputing to_tsvector() for each row it passes cost 6 µs a
# row (a one-word query over a million messages took 170-960 ms); reading a stored vector is far cheaper.
# The column is PostgreSQL's alone, outside the model (SQLite has FTS5 instead).
PG_COLUMN_SQL = (
    "ALTER TABLE chat_message ADD COLUMN IF NOT EXISTS body_search tsvector "
    f"GENERATED ALWAYS AS (to_tsvector('{PG_CONFIG}'::regconfig, COALESCE(body, ''))) STORED"
)
PG_INDEX_SQL = "CREATE INDEX IF NOT EXISTS chat_message_body_search ON chat_message USING gin (body_search)"
PG_DROP_SQL = [
    "DROP INDEX IF EXISTS chat_message_body_search",
    "ALTER TABLE chat_message DROP COLUMN IF EXISTS body_search",
]
SQLITE_FTS_SQL = [
    # An external-content table: the text stays in chat_message, FTS5 keeps only its index.
    "CREATE VIRTUAL TABLE IF NOT EXISTS chat_message_fts USING fts5("
    "body, content='chat_message', content_rowid='id', tokenize='unicode61 remove_diacritics 0')",
    "CREATE TRIGGER IF NOT EXISTS chat_message_fts_insert AFTER INSERT ON chat_message BEGIN "
    "INSERT INTO chat_message_fts(rowid, body) VALUES (new.id, new.body); END",
    "CREATE TRIGGER IF NOT EXISTS chat_message_fts_delete AFTER DELETE ON chat_message BEGIN "
    "INSERT INTO chat_message_fts(chat_message_fts, rowid, body) VALUES ('delete', old.id, old.body); END",
    "CREATE TRIGGER IF NOT EXISTS chat_message_fts_update AFTER UPDATE OF body ON chat_message BEGIN "
    "INSERT INTO chat_message_fts(chat_message_fts, rowid, body) VALUES ('delete', old.id, old.body); "
    "INSERT INTO chat_message_fts(rowid, body) VALUES (new.id, new.body); END",
    "INSERT INTO chat_message_fts(chat_message_fts) VALUES ('rebuild')",
]
SQLITE_FTS_DROP_SQL = [
    "DROP TRIGGER IF EXISTS chat_message_fts_insert",
    "DROP TRIGGER IF EXISTS chat_message_fts_delete",
    "DROP TRIGGER IF EXISTS chat_message_fts_update",
    "DROP TABLE IF EXISTS chat_message_fts",
]

_WORD = re.compile(r"[^\W_]+")


def query_words(q: str) -> list[str]:
    """The words of a query, as both databases split them (letters and digits; punctuation separates)."""
    return _WORD.findall(q)


def messages_matching(q: str) -> QuerySet[Message]:
    """The messages whose body holds every word of q (an empty queryset when q has no word)."""
    words = query_words(q)
    if not words:
        return Message.objects.none()
    if connection.vendor == "postgresql":
        # plainto_tsquery: the words ANDed, none of tsquery's operators.
        return Message.objects.filter(
            RawSQL(
                f"chat_message.body_search @@ plainto_tsquery('{PG_CONFIG}'::regconfig, %s)",
                (" ".join(words),),
                output_field=BooleanField(),
            )
        )
    # Each word quoted: FTS5's query syntax (AND, NEAR, column filters, *) stays out of user hands.
    fts_query = " ".join('"' + word.replace('"', '""') + '"' for word in words)
    return Message.objects.filter(
        id__in=RawSQL("SELECT rowid FROM chat_message_fts WHERE chat_message_fts MATCH %s", (fts_query,))
    )


def search_index_ensure(sender=None, using: str = "default", **kwargs) -> None:
    """Called after migrate: on SQLite, put back the FTS5 triggers if a table rebuild dropped them.

    Django alters an SQLite table by building a new one and renaming it, which
    drops the old table's triggers; a later migration of chat_message would
    otherwise leave the search index silently stale.
    """
    from django.db import connections

    target = connections[using]
    if target.vendor != "sqlite":
        return
    with target.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'chat_message_fts_%%'")
        (triggers,) = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM sqlite_master WHERE name = 'chat_message'")
        (tables,) = cursor.fetchone()
        if triggers == 3 or not tables:
            return
        for statement in SQLITE_FTS_SQL:
            cursor.execute(statement)
