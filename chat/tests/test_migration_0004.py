"""chat 0004: stored bodies get their html, deletion traces become the change log, and search finds old rows."""

import pytest

from chat.tests.test_migrations import migrate  # noqa: F401  (the fixture)

BEFORE = ("chat", "0003_strip_refused_text")
AFTER = ("chat", "0004_edits_reactions_cursor")
LATEST = ("chat", "0006_merge_0004_edits_reactions_cursor_0005_count_indexes")


@pytest.mark.django_db(transaction=True)
def test_old_rows_get_html_their_deletions_resume_and_search_finds_them(migrate):  # noqa: F811
    apps = migrate(BEFORE)
    user = apps.get_model("auth", "User").objects.create(username="alice", password="!")
    lobby = apps.get_model("chat", "Room").objects.create(slug="lobby", title="Lobby")
    quiet = apps.get_model("chat", "Room").objects.create(slug="quiet", title="Quiet")
    Message = apps.get_model("chat", "Message")
    bold = Message.objects.create(room=lobby, author=user, body="**old** news <script>x</script>", client_id="1")
    Message.objects.create(room=quiet, author=user, body="plain", client_id="2")
    DeletedMessage = apps.get_model("chat", "DeletedMessage")
    for message_id in (900, 901):
        DeletedMessage.objects.create(room=lobby, message_id=message_id)

    apps = migrate(AFTER)
    Message, Room = apps.get_model("chat", "Message"), apps.get_model("chat", "Room")
    assert Message.objects.get(id=bold.id).html == "<p><strong>old</strong> news &lt;script&gt;x&lt;/script&gt;</p>"
    assert Message.objects.get(body="plain").html == "<p>plain</p>"
    changes = apps.get_model("chat", "RoomChange").objects.order_by("seq")
    assert list(changes.values_list("room_id", "seq", "kind", "message_id")) == [
        (lobby.id, 1, "deleted", 900),
        (lobby.id, 2, "deleted", 901),
    ]
    assert dict(Room.objects.values_list("slug", "change_seq")) == {"lobby": 2, "quiet": 0}

    # The code of today runs on the schema of today: both branches' migrations (0004s, 0005, the merge).
    migrate(LATEST)
    from chat.models import Room as LiveRoom
    from chat.selectors import message_search, room_deleted_recently, room_resume

    live_lobby = LiveRoom.objects.get(slug="lobby")
    assert room_deleted_recently(room=live_lobby) == [900, 901]
    resumed = room_resume(room=live_lobby, cursor=f"{live_lobby.pk}.1")
    assert [change["id"] for change in resumed["changes"]] == [901]
    from django.contrib.auth import get_user_model

    found, _ = message_search(user=get_user_model().objects.get(username="alice"), q="old news", limit=10)
    assert [message["id"] for message in found] == [bold.id]
