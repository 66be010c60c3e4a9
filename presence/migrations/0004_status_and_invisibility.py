from django.db import migrations, models


class Migration(migrations.Migration):
    """A custom status with an expiry, do-not-disturb, invisibility, and when a user went away."""

    dependencies = [
        ("presence", "0003_connection_topic"),
    ]

    operations = [
        migrations.AddField(
            model_name="userpresence", name="away_since", field=models.DateTimeField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="userpresence", name="status_text", field=models.CharField(blank=True, max_length=80)
        ),
        migrations.AddField(
            model_name="userpresence", name="status_emoji", field=models.CharField(blank=True, max_length=16)
        ),
        migrations.AddField(
            model_name="userpresence",
            name="status_expires_at",
            field=models.DateTimeField(blank=True, db_index=True, null=True),
        ),
        migrations.AddField(model_name="userpresence", name="dnd", field=models.BooleanField(default=False)),
        migrations.AddField(model_name="userpresence", name="invisible", field=models.BooleanField(default=False)),
    ]
