"""The activity dashboard's tables: the lease, minute samples, users seen, daily roll-ups."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("chat", "0003_strip_refused_text"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="DayRollup",
            fields=[
                ("day", models.DateField(primary_key=True, serialize=False)),
                ("active_users", models.PositiveIntegerField()),
                ("last_message_id", models.BigIntegerField()),
            ],
            options={
                "ordering": ["day"],
            },
        ),
        migrations.CreateModel(
            name="Lease",
            fields=[
                ("name", models.CharField(max_length=100, primary_key=True, serialize=False)),
                ("holder", models.CharField(max_length=100)),
                ("expires_at", models.DateTimeField()),
            ],
        ),
        migrations.CreateModel(
            name="OnlineSample",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("taken_at", models.DateTimeField(unique=True)),
                ("online", models.PositiveIntegerField()),
            ],
            options={
                "ordering": ["taken_at"],
            },
        ),
        migrations.CreateModel(
            name="RoomDayRollup",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("day", models.DateField()),
                ("messages", models.PositiveIntegerField()),
                (
                    "room",
                    models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+", to="chat.room"),
                ),
            ],
            options={
                "constraints": [models.UniqueConstraint(fields=("day", "room"), name="activity_room_day_once")],
            },
        ),
        migrations.CreateModel(
            name="UserSeenDay",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("day", models.DateField()),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to=settings.AUTH_USER_MODEL
                    ),
                ),
            ],
            options={
                "constraints": [models.UniqueConstraint(fields=("day", "user"), name="activity_user_seen_once_a_day")],
            },
        ),
    ]
