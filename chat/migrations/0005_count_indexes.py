"""Indexes that let the counts read no message rows: unread walks (room, id) with the author in the index,
mentions walk only the messages that mention someone (bench/rooms_api.py: /api/rooms on PostgreSQL).

The new (room, id) index replaces the old one, which served history reads the same way; it is made first.
"""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0004_rooms_membership_mentions"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name="message",
            index=models.Index(fields=["room", "id"], include=("author",), name="chat_message_room_id_author"),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                condition=models.Q(("mentions", ""), _negated=True),
                fields=["room", "id"],
                include=("author", "mentions"),
                name="chat_message_mentioned",
            ),
        ),
        migrations.RemoveIndex(model_name="message", name="chat_message_room_id"),
    ]
