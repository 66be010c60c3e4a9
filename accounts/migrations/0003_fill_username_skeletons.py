"""Index the names of the users who signed up before UsernameSkeleton existed."""

from django.conf import settings
from django.db import migrations

from accounts.skeleton import username_skeleton_digest

CHUNK = 1000


def fill(apps, schema_editor) -> None:
    user_model = apps.get_model(settings.AUTH_USER_MODEL)
    skeleton_model = apps.get_model("accounts", "UsernameSkeleton")
    # In id order, conflicts ignored: of existing users whose names look alike,
    # the first keeps the digest and the others are left without a row.
    users = user_model._default_manager.order_by("pk").values_list("pk", "username")
    rows = {}
    for user_id, username in users.iterator(chunk_size=CHUNK):
        digest = username_skeleton_digest(username)
        rows.setdefault(digest, skeleton_model(user_id=user_id, digest=digest))
        if len(rows) == CHUNK:
            skeleton_model.objects.bulk_create(rows.values(), ignore_conflicts=True)
            rows.clear()
    skeleton_model.objects.bulk_create(rows.values(), ignore_conflicts=True)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_username_skeleton"),
    ]

    operations = [
        migrations.RunPython(fill, migrations.RunPython.noop),
    ]
