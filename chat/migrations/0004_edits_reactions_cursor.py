import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

BATCH = 2000


def render_stored_bodies(apps, schema_editor):
    """Rows stored before formatting get their html, rendered as a new message's would be."""
    from chat.formatting import message_html

    Message = apps.get_model("chat", "Message")
    last = 0
    while True:
        batch = list(Message.objects.filter(id__gt=last).order_by("id").only("id", "body")[:BATCH])
        if not batch:
            return
        for message in batch:
            message.html = message_html(message.body)
        Message.objects.bulk_update(batch, ["html"])
        last = batch[-1].id


def deletions_into_change_log(apps, schema_editor):
    """The deletion traces become the first changes of each room's log, so ?after= resumes still remove them."""
    DeletedMessage = apps.get_model("chat", "DeletedMessage")
    RoomChange = apps.get_model("chat", "RoomChange")
    Room = apps.get_model("chat", "Room")
    seqs: dict[int, int] = {}
    changes = []
    for trace in DeletedMessage.objects.order_by("room_id", "deleted_at", "id"):
        seqs[trace.room_id] = seqs.get(trace.room_id, 0) + 1
        changes.append(
            RoomChange(
                room_id=trace.room_id,
                seq=seqs[trace.room_id],
                kind="deleted",
                message_id=trace.message_id,
                changed_at=trace.deleted_at,
            )
        )
    RoomChange.objects.bulk_create(changes, batch_size=BATCH)
    for room_id, seq in seqs.items():
        Room.objects.filter(id=room_id).update(change_seq=seq)


def search_index(apps, schema_editor):
    """PostgreSQL: a stored tsvector of the body with a GIN index; SQLite: an FTS5 table kept in step by triggers."""
    from chat import search

    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(search.PG_COLUMN_SQL)
        schema_editor.execute(search.PG_INDEX_SQL)
    elif vendor == "sqlite":
        for statement in search.SQLITE_FTS_SQL:
            schema_editor.execute(statement)


def search_index_drop(apps, schema_editor):
    from chat import search

    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        for statement in search.PG_DROP_SQL:
            schema_editor.execute(statement)
    elif vendor == "sqlite":
        for statement in search.SQLITE_FTS_DROP_SQL:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0003_strip_refused_text"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="room",
            name="change_seq",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="message",
            name="html",
            field=models.TextField(default=""),
        ),
        migrations.AddField(
            model_name="message",
            name="edited_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="message",
            name="reaction_summary",
            field=models.JSONField(default=list),
        ),
        migrations.CreateModel(
            name="RoomChange",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("seq", models.BigIntegerField()),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("posted", "posted"),
                            ("edited", "edited"),
                            ("deleted", "deleted"),
                            ("reacted", "reacted"),
                        ],
                        max_length=8,
                    ),
                ),
                ("message_id", models.BigIntegerField()),
                ("changed_at", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                (
                    "room",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="changes", to="chat.room"
                    ),
                ),
            ],
            options={
                "constraints": [models.UniqueConstraint(fields=("room", "seq"), name="chat_roomchange_room_seq")],
            },
        ),
        migrations.CreateModel(
            name="MessageEdit",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("body", models.TextField()),
                ("edited_at", models.DateTimeField()),
                (
                    "message",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="edits", to="chat.message"
                    ),
                ),
            ],
            options={"ordering": ["id"]},
        ),
        migrations.CreateModel(
            name="Reaction",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("emoji", models.CharField(max_length=32)),
                (
                    "message",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="reactions", to="chat.message"
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="chat_reactions",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("message", "user", "emoji"), name="chat_reaction_once")
                ],
            },
        ),
        migrations.RunPython(render_stored_bodies, migrations.RunPython.noop, elidable=True),
        migrations.RunPython(deletions_into_change_log, migrations.RunPython.noop),
        migrations.DeleteModel(name="DeletedMessage"),
        migrations.RunPython(search_index, search_index_drop),
    ]
