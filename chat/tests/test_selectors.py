"""Chat reads: one query each, whatever the size."""

from datetime import timedelta

import pytest
from django.utils import timezone

from chat.models import Membership, Message, Room
from chat.selectors import (
    room_activity_members,
    room_counts,
    room_history,
    room_list,
    room_messages_after,
    room_presence,
    rooms_of_user,
)
from chat.services import message_delete, message_post, room_direct_open, room_enter
from presence.models import Connection

pytestmark = pytest.mark.django_db


def connect(user, room: str, *, endpoint: str = "chat", age: float = 0) -> None:
    moment = timezone.now() - timedelta(seconds=age)
    Connection.objects.create(
        channel_name=f"c.{user.pk}.{room}.{Connection.objects.count()}",
        user=user,
        server="test",
        endpoint=endpoint,
        topic=room,
        opened_at=moment,
        heartbeat_at=moment,
    )


def fill(room, author, count: int) -> list[int]:
    Message.objects.bulk_create(
        Message(room=room, author=author, body=f"m{i}", client_id=f"c{i}") for i in range(count)
    )
    return list(Message.objects.filter(room=room).order_by("id").values_list("id", flat=True))


def test_room_list_counts_people_once_each_in_one_query(make_user, make_room, django_assert_num_queries, settings):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    make_room("lobby"), make_room("quiet"), make_room("zoo")
    connect(alice, "lobby")
    connect(alice, "lobby")  # a second tab
    connect(bob, "lobby")
    connect(bob, "zoo")
    connect(carol, "zoo", age=settings.PRESENCE_TTL + 5)  # a dead process's socket
    connect(carol, "", endpoint="presence")
    with django_assert_num_queries(1):
        rooms = room_list(user=carol)
    assert [(r["slug"], r["present"]) for r in rooms] == [("lobby", 2), ("quiet", 0), ("zoo", 1)]


def test_room_list_offers_the_public_rooms_one_is_not_in_and_no_direct_room(make_user, make_room):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    make_room("lobby"), make_room("zoo")
    room_direct_open(user=alice, other=bob)
    room_enter(slug="zoo", user=carol)
    assert [r["slug"] for r in room_list(user=carol)] == ["lobby"]
    assert [r["slug"] for r in room_list(user=alice)] == ["lobby", "zoo"]


def test_readable_by_is_every_public_room_once_and_only_ones_own_direct_rooms(make_user, make_room):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    lobby = make_room("lobby")
    for user in (alice, bob, carol):
        room_enter(slug="lobby", user=user)  # members must not repeat the room
    direct = room_direct_open(user=alice, other=bob)
    assert list(Room.objects.readable_by(alice)) == [direct, lobby]
    assert list(Room.objects.readable_by(carol)) == [lobby]


def test_my_rooms_have_counts_and_the_newest_message_most_recent_first_in_one_query(
    make_user, make_room, django_assert_num_queries
):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    lobby, busy = make_room("lobby"), make_room("busy")
    make_room("quiet", title="Quiet room")
    for slug in ("lobby", "quiet", "busy"):
        room_enter(slug=slug, user=alice)
    direct = room_direct_open(user=bob, other=alice)
    message_post(room=lobby, user=bob, body="hello @alice", client_id="l1")
    message_post(room=lobby, user=alice, body="mine: never unread", client_id="l2")
    message_post(room=busy, user=bob, body="one", client_id="b1")
    gone = message_post(room=busy, user=carol, body="deleted: never unread", client_id="b2")[0]
    message_delete(user=carol, message_id=gone["id"])
    message_post(room=direct, user=bob, body="psst @ALICE @bob", client_id="d1")
    newest = message_post(room=busy, user=carol, body="@alice @carol", client_id="b3")[0]

    with django_assert_num_queries(1):
        rooms = rooms_of_user(user=alice)
    assert [(r["slug"], r["title"], r["kind"], r["unread"], r["mentions"]) for r in rooms] == [
        ("busy", "busy", "public", 2, 1),
        (direct.slug, "bob", "direct", 1, 1),
        ("lobby", "lobby", "public", 1, 1),
        ("quiet", "Quiet room", "public", 0, 0),
    ]
    # A live frame also carries the room's cursor; a stored one does not.
    assert rooms[0]["last_message"] == {key: value for key, value in newest.items() if key != "cursor"}
    assert rooms[0]["last_message"]["mentions"] == ["alice", "carol"]
    assert rooms[-1]["last_message"] is None and rooms[-1]["last_read"] is None
    # The other member sees the direct room under alice's name; carol does not see it at all.
    assert [r["title"] for r in rooms_of_user(user=bob) if r["kind"] == "direct"] == ["alice"]
    assert rooms_of_user(user=carol) == []


def test_room_activity_goes_to_members_sockets_elsewhere_with_their_counts_in_two_queries(
    make_user, make_room, django_assert_num_queries, settings
):
    alice, bob, carol, dave, erin = (make_user(name) for name in ("alice", "bob", "carol", "dave", "erin"))
    room = make_room("lobby")
    for user in (alice, bob, carol, dave):
        room_enter(slug="lobby", user=user)
    connect(alice, "", endpoint="presence")  # the presence page: hears of it
    connect(bob, "lobby")  # in the room itself: gets the messages, not the counts
    connect(carol, "lobby")
    connect(carol, "other")  # in the room and in another: hears of it there only
    connect(dave, "", endpoint="presence", age=settings.PRESENCE_TTL + 5)  # a dead process's socket
    connect(erin, "", endpoint="presence")  # online, not a member
    message_post(room=room, user=bob, body="@carol hi", client_id="c1")
    message_post(room=room, user=bob, body="again", client_id="c2")
    first_id = Message.objects.order_by("id").first().id
    Membership.objects.filter(user=carol).update(last_read_id=first_id)
    with django_assert_num_queries(2):
        members = room_activity_members(room=room)
    alice_page = Connection.objects.get(user=alice).channel_name
    carol_elsewhere = Connection.objects.get(user=carol, topic="other").channel_name
    assert members == [
        {"user_id": alice.pk, "title": "lobby", "unread": 2, "mentions": 0, "last_read": 0, "sockets": [alice_page]},
        {
            "user_id": carol.pk,
            "title": "lobby",
            "unread": 1,
            "mentions": 0,
            "last_read": first_id,
            "sockets": [carol_elsewhere],
        },
    ]


def test_room_presence_lists_live_users_once_sorted(make_user, make_room, settings):
    bob, alice = make_user("bob"), make_user("alice")
    connect(bob, "lobby")
    connect(alice, "lobby")
    connect(alice, "lobby")
    connect(make_user("ghost"), "lobby", age=settings.PRESENCE_TTL + 5)
    connect(make_user("elsewhere"), "zoo")
    assert room_presence(slug="lobby") == ["alice", "bob"]


def test_history_pages_backwards_oldest_first_in_one_query(make_user, make_room, django_assert_num_queries):
    alice, room = make_user("alice"), make_room()
    ids = fill(room, alice, 120)
    fill(make_room("other"), alice, 5)
    with django_assert_num_queries(1):
        page, more = room_history(room=room)
    assert [m["id"] for m in page] == ids[-50:] and more
    page, more = room_history(room=room, before=ids[-50], limit=50)
    assert [m["id"] for m in page] == ids[20:70] and more
    page, more = room_history(room=room, before=ids[20], limit=50)
    assert [m["id"] for m in page] == ids[:20] and not more


def test_messages_after_are_exact_and_capped(make_user, make_room, django_assert_num_queries):
    alice, room = make_user("alice"), make_room()
    ids = fill(room, alice, 30)
    with django_assert_num_queries(1):
        page, more = room_messages_after(room=room, after=ids[9])
    assert [m["id"] for m in page] == ids[10:] and not more
    page, more = room_messages_after(room=room, after=0, limit=25)
    assert [m["id"] for m in page] == ids[:25] and more
    assert room_messages_after(room=room, after=ids[-1]) == ([], False)


def test_a_resume_by_cursor_costs_three_queries_whatever_was_missed(make_user, make_room, django_assert_num_queries):
    from chat.selectors import room_cursor, room_resume
    from chat.services import message_edit, message_post, message_react

    alice, room = make_user("alice"), make_room()
    sent = [message_post(room=room, user=alice, body=f"m{i}")[0]["id"] for i in range(6)]
    cursor = room_cursor(room=room)
    for message_id in sent[:3]:
        message_edit(room=room, user=alice, message_id=message_id, body="edited")
        message_react(room=room, user=alice, message_id=message_id, emoji="👍")
    new = message_post(room=room, user=alice, body="new")[0]["id"]
    # The room's seq, its changes, their messages (with their reactions).
    with django_assert_num_queries(3):
        missed = room_resume(room=room, cursor=cursor)
    assert [m["id"] for m in missed["messages"]] == [new]
    assert sorted((c["type"], c["id"]) for c in missed["changes"]) == sorted(
        [("chat.edited", i) for i in sent[:3]] + [("chat.reactions", i) for i in sent[:3]]
    )
    assert room_resume(room=room, cursor=missed["cursor"]) == {
        "messages": [],
        "changes": [],
        "cursor": missed["cursor"],
    }


def test_a_socket_opens_with_the_history_and_its_cursor_in_one_query(make_user, make_room, django_assert_num_queries):
    from chat.selectors import room_cursor, room_history_cursor
    from chat.services import message_post, message_react

    alice, room = make_user("alice"), make_room()
    sent = [message_post(room=room, user=alice, body=f"m{i}")[0]["id"] for i in range(3)]
    message_react(room=room, user=alice, message_id=sent[0], emoji="👍")
    with django_assert_num_queries(1):
        messages, more, cursor = room_history_cursor(room=room)
    assert [m["id"] for m in messages] == sent and not more and cursor == room_cursor(room=room)
    assert messages[0]["reactions"] == [{"emoji": "👍", "users": ["alice"]}] and messages[1]["reactions"] == []


def test_counts_stop_at_the_cap_however_long_a_room_was_left_unread(make_user, make_room, monkeypatch):
    monkeypatch.setattr("chat.protocol.COUNT_MAX", 3)
    alice, bob, room = make_user("alice"), make_user("bob"), make_room("lobby")
    room_enter(slug="lobby", user=alice)
    Message.objects.bulk_create(
        Message(room=room, author=bob, body=f"@alice {n}", client_id=f"c{n}", mentions=" alice ") for n in range(5)
    )
    assert room_counts(room=room, user=alice) == (3, 3)
