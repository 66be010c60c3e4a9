"""chat 0003: text stored before the validator ran loses the characters it refuses."""

from importlib import import_module

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext

BEFORE = ("chat", "0002_deleted_message")
AFTER = ("chat", "0003_strip_refused_text")

# C0 controls but tab and line breaks, DEL and C1, the bidi controls.
REFUSED = [
    chr(point)
    for point in [*range(0x00, 0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
    if chr(point) not in "\t\n\r"
]


@pytest.fixture
def migrate():
    """Migrate the test database to a node and return its historical apps; back to the latest state after."""

    def to(target: tuple[str, str]):
        executor = MigrationExecutor(connection)
        executor.migrate([target])
        return executor.loader.project_state([target]).apps

    yield to
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    executor = MigrationExecutor(connection)
    assert executor.migration_plan(executor.loader.graph.leaf_nodes()) == [], "left behind the latest migration"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("chunk", [500, 3])
def test_refused_characters_are_taken_out_of_old_bodies_and_titles(migrate, monkeypatch, chunk):
    # Chunks of 3: the writes come between the iterator's fetches, which SQLite doesn't isolate.
    monkeypatch.setattr(import_module("chat.migrations.0003_strip_refused_text"), "CHUNK", chunk)
    apps = migrate(BEFORE)
    user = apps.get_model("auth", "User").objects.create(username="alice", password="!")
    Room, Message = apps.get_model("chat", "Room"), apps.get_model("chat", "Message")
    titles = {
        "lobby": ("Lobby \u05e9\u05dc\u05d5\u05dd", "Lobby \u05e9\u05dc\u05d5\u05dd"),
        "spoof": ("invoice\u202efdp.exe", "invoicefdp.exe"),
        "padded": ("\x07 Tea room ", "Tea room"),
        "blank": ("\u202e\u200b\x1b", "blank"),
        "legacy": ("  kept as stored  ", "  kept as stored  "),
    }
    rooms = {slug: Room.objects.create(slug=slug, title=title) for slug, (title, _) in titles.items()}
    lobby = rooms["lobby"]
    bodies = {
        "hello \U0001f469\u200d\U0001f469\u200d\U0001f467 \u0645\u0631\u062d\u0628\u0627\n\tok": None,  # valid: kept
        "  stored untrimmed  ": None,  # no refused character: left exactly as it is
        "invoice\u202efdp.exe": "invoicefdp.exe",
        "\x1b[31mred\x1b[0m": "[31mred[0m",
        "bell\x07": "bell",
        "next\x85line": "nextline",
        "isolate\u2066x\u2069": "isolatex",
    }
    if connection.vendor != "postgresql":  # PostgreSQL cannot store NUL
        bodies["nul\x00byte"] = "nulbyte"
    kept = {
        Message.objects.create(room=lobby, author=user, body=body, client_id=f"k{n}").id: after or body
        for n, (body, after) in enumerate(bodies.items())
    }
    for n, char in enumerate(REFUSED):
        if char != "\x00" or connection.vendor != "postgresql":
            message = Message.objects.create(room=rooms["spoof"], author=user, body=f"a{char}b", client_id=f"c{n}")
            kept[message.id] = "ab"
    emptied = [
        Message.objects.create(room=room, author=user, body=body, client_id=f"e{n}")
        for n, (room, body) in enumerate([(lobby, "\u202e"), (rooms["blank"], "\x07\u200b \n\u0301"), (lobby, "\x1b")])
    ]
    apps.get_model("chat", "DeletedMessage").objects.create(room=lobby, message_id=999_999)

    apps = migrate(AFTER)
    Room, Message = apps.get_model("chat", "Room"), apps.get_model("chat", "Message")
    assert dict(Room.objects.values_list("slug", "title")) == {slug: after for slug, (_, after) in titles.items()}
    assert dict(Message.objects.values_list("id", "body")) == kept
    traces = apps.get_model("chat", "DeletedMessage").objects.values_list("room_id", "message_id")
    assert sorted(traces) == sorted([(lobby.id, 999_999), *((message.room_id, message.id) for message in emptied)])


@pytest.mark.django_db(transaction=True)
def test_rows_with_nothing_to_strip_are_not_written(migrate):
    apps = migrate(BEFORE)
    user = apps.get_model("auth", "User").objects.create(username="alice", password="!")
    room = apps.get_model("chat", "Room").objects.create(slug="lobby", title="  Lobby\u200b")
    apps.get_model("chat", "Message").objects.create(room=room, author=user, body="hi ", client_id="1")

    with CaptureQueriesContext(connection) as queries:
        apps = migrate(AFTER)
    statements = [query["sql"] for query in queries if '"chat_' in query["sql"]]
    assert statements, "the migration's look-up was not seen"
    assert not [sql for sql in statements if sql.startswith(("UPDATE", "DELETE", "INSERT"))]
    assert list(apps.get_model("chat", "Room").objects.values_list("title", flat=True)) == ["  Lobby\u200b"]
    assert list(apps.get_model("chat", "Message").objects.values_list("body", flat=True)) == ["hi "]
    assert not apps.get_model("chat", "DeletedMessage").objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_migration_goes_back_without_touching_the_rows(migrate):
    apps = migrate(AFTER)
    user = apps.get_model("auth", "User").objects.create(username="alice", password="!")
    room = apps.get_model("chat", "Room").objects.create(slug="lobby", title="Lobby")
    apps.get_model("chat", "Message").objects.create(room=room, author=user, body="hi", client_id="1")

    apps = migrate(BEFORE)
    assert list(apps.get_model("chat", "Message").objects.values_list("body", flat=True)) == ["hi"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("chunk", [1000, 2])
def test_authors_become_members_with_their_rooms_read_and_direct_slugs_move_aside(migrate, monkeypatch, chunk):
    monkeypatch.setattr(import_module("chat.migrations.0004_rooms_membership_mentions"), "CHUNK", chunk)
    apps = migrate(AFTER)
    User = apps.get_model("auth", "User")
    alice, bob, carol = (User.objects.create(username=name, password="!") for name in ("alice", "bob", "carol"))
    Room, Message = apps.get_model("chat", "Room"), apps.get_model("chat", "Message")
    lobby, quiet = Room.objects.create(slug="lobby", title="Lobby"), Room.objects.create(slug="quiet", title="Q")
    # Made by a GET when that still created rooms: it would pass for the direct room of users 1 and 2.
    squatted = Room.objects.create(slug="dm-1-2", title="dm-1-2")
    Room.objects.create(slug="dm-1-2-room", title="taken")
    for n, (room, author) in enumerate([(lobby, alice), (lobby, bob), (lobby, alice), (squatted, carol)]):
        Message.objects.create(room=room, author=author, body="hi", client_id=f"c{n}")

    apps = migrate(("chat", "0004_rooms_membership_mentions"))
    Room, Membership = apps.get_model("chat", "Room"), apps.get_model("chat", "Membership")
    newest = {room_id: top for room_id, top in Message.objects.values_list("room_id", "id").order_by("id")}
    rows = Membership.objects.values_list("room__slug", "user__username", "last_read_id")
    assert sorted(rows) == sorted(
        [
            ("lobby", "alice", newest[lobby.id]),
            ("lobby", "bob", newest[lobby.id]),
            ("dm-1-2-room-2", "carol", newest[squatted.id]),
        ]
    )
    assert Room.objects.get(id=squatted.id).slug == "dm-1-2-room-2"
    assert set(Room.objects.values_list("kind", flat=True)) == {"public"}
    assert not Membership.objects.filter(room=quiet.id).exists()
