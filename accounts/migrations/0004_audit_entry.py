"""The audit log of moderation: who did what to whom, and when."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_fill_username_skeletons"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="AuditEntry",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("at", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                ("actor_name", models.CharField(db_index=True, max_length=150, verbose_name="by")),
                (
                    "action",
                    models.CharField(
                        choices=[
                            ("message_deleted", "message deleted"),
                            ("sessions_ended", "sessions ended"),
                            ("user_deactivated", "user deactivated"),
                            ("user_reactivated", "user reactivated"),
                            ("staff_granted", "staff status granted"),
                            ("staff_removed", "staff status removed"),
                            ("superuser_granted", "superuser status granted"),
                            ("superuser_removed", "superuser status removed"),
                        ],
                        db_index=True,
                        max_length=32,
                    ),
                ),
                ("target_name", models.CharField(blank=True, max_length=150, verbose_name="whom")),
                ("detail", models.CharField(blank=True, max_length=300)),
                (
                    "actor",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "target",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "verbose_name": "audit entry",
                "verbose_name_plural": "audit log",
                "ordering": ["-at", "-id"],
            },
        ),
    ]
