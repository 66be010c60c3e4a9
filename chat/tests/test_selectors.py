"""Chat reads: one query each, whatever the size."""

from datetime import timedelta

import pytest
from django.utils import timezone

from chat.models import Message
from chat.selectors import room_history, room_list, room_messages_after, room_presence
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
        rooms = room_list()
    assert [(r["slug"], r["present"]) for r in rooms] == [("lobby", 2), ("quiet", 0), ("zoo", 1)]


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
