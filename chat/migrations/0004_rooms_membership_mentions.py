"""Rooms get a kind (public or direct), members with read markers, and messages the names they mention."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models
from django.db.models import Max

# A direct room's slug names its members; a public room that took one when a GET
# still created rooms would be opened as their direct room, so it moves aside.
DIRECT_SLUG = r"^dm-[0-9]+-[0-9]+$"
CHUNK = 1000


def members_from_authors(apps, schema_editor) -> None:
    """Whoever wrote in a room is a member of it (as posting makes one now), with everything there read."""
    Room = apps.get_model("chat", "Room")
    Message = apps.get_model("chat", "Message")
    Membership = apps.get_model("chat", "Membership")

    for room in Room.objects.filter(slug__regex=DIRECT_SLUG).order_by("id"):
        slug, n = f"{room.slug}-room"[:50], 2
        while Room.objects.filter(slug=slug).exists():
            slug, n = f"{room.slug}-room-{n}"[:50], n + 1
        room.slug = slug
        room.save(update_fields=["slug"])

    newest = dict(Message.objects.order_by().values("room_id").annotate(top=Max("id")).values_list("room_id", "top"))
    pairs = Message.objects.order_by("room_id", "author_id").values_list("room_id", "author_id").distinct()
    batch = []
    for room_id, author_id in pairs.iterator(chunk_size=CHUNK):
        batch.append(Membership(room_id=room_id, user_id=author_id, last_read_id=newest[room_id]))
        if len(batch) >= CHUNK:
            Membership.objects.bulk_create(batch, ignore_conflicts=True)
            batch = []
    Membership.objects.bulk_create(batch, ignore_conflicts=True)


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0003_strip_refused_text"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="mentions",
            field=models.TextField(blank=True, default=""),
        ),
        migrations.AddField(
            model_name="room",
            name="kind",
            field=models.CharField(
                choices=[("public", "public"), ("direct", "direct")], default="public", max_length=8
            ),
        ),
        migrations.CreateModel(
            name="Membership",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("last_read_id", models.BigIntegerField(default=0)),
                ("joined_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "room",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="memberships", to="chat.room"
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="chat_memberships",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "constraints": [models.UniqueConstraint(fields=("room", "user"), name="chat_membership_once")],
            },
        ),
        migrations.RunPython(members_from_authors, migrations.RunPython.noop),
    ]
