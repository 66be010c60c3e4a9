from django.db import migrations, models


class Migration(migrations.Migration):
    """A socket's room becomes its topic, and endpoints name themselves: presence's rows know nothing of chat."""

    dependencies = [
        ("presence", "0002_userpresence_away"),
    ]

    operations = [
        migrations.RenameField(model_name="connection", old_name="room", new_name="topic"),
        migrations.AlterField(
            model_name="connection",
            name="endpoint",
            field=models.CharField(max_length=16),
        ),
    ]
