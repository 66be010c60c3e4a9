"""Chat writes, called without a socket."""

import threading

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat.models import Membership, Message, Room
from chat.ratelimit import rate_take
from chat.services import (
    RoomForbidden,
    RoomMissing,
    body_clean,
    membership_leave,
    membership_read,
    mentions_find,
    message_delete,
    message_post,
    room_create,
    room_direct_open,
    room_enter,
)
from realtime.protocol import ProtocolError


@pytest.mark.parametrize(
    "body", ["", "   ", "\n\t\u3000\u2003", "x" * 2001, "a\x00b", "\ud800", "ok \udfff", None, 5, ["x"], {"a": 1}]
)
def test_body_clean_refuses(body):
    with pytest.raises(ProtocolError) as raised:
        body_clean(body)
    assert raised.value.code == "invalid"


@pytest.mark.parametrize(
    ("body", "stored"),
    [
        ("  hi  ", "hi"),
        ("x" * 2000, "x" * 2000),
        (" " + "🙂" * 2000 + "\n", "🙂" * 2000),
        ("a\r\n  b", "a\r\n  b"),
        ("<b>&amp;</b>", "<b>&amp;</b>"),
        ("e\u0301", "e\u0301"),  # not normalized
    ],
)
def test_body_clean_trims_and_keeps_the_rest_byte_exact(body, stored):
    assert body_clean(body) == stored


@pytest.mark.django_db
def test_message_post_twice_with_one_client_id_stores_one_row(make_user, make_room):
    alice, room = make_user("alice"), make_room()
    first, new = message_post(room=room, user=alice, body="hi", client_id="c1")
    again, new_again = message_post(room=room, user=alice, body="hi", client_id="c1")
    # The retry changes nothing, so it carries no cursor; otherwise it is the stored message.
    assert new and not new_again and {**first, "cursor": None} == {**again, "cursor": None}
    assert Message.objects.count() == 1


@pytest.mark.django_db
def test_one_client_id_may_be_reused_by_another_user_or_room(make_user, make_room):
    alice, bob, lobby, other = make_user("alice"), make_user("bob"), make_room("lobby"), make_room("other")
    ids = {
        message_post(room=lobby, user=alice, body="a", client_id="c1")[0]["id"],
        message_post(room=lobby, user=bob, body="b", client_id="c1")[0]["id"],
        message_post(room=other, user=alice, body="c", client_id="c1")[0]["id"],
    }
    assert len(ids) == 3


@pytest.mark.django_db(transaction=True)
def test_concurrent_sends_of_one_client_id_store_one_row(make_user, make_room):
    alice, room = make_user("alice"), make_room()
    barrier = threading.Barrier(6)
    results, errors = [], []

    def send():
        try:
            barrier.wait(timeout=10)
            results.append(message_post(room=room, user=alice, body="race", client_id="same"))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert Message.objects.count() == 1
    assert len({frame["id"] for frame, _ in results}) == 1
    assert sum(new for _, new in results) == 1


@pytest.mark.django_db
@pytest.mark.usefixtures("layer")
def test_rate_limit_allows_a_burst_of_10_then_one_per_interval(settings):
    assert [rate_take(user_id=1) for _ in range(10)] == [0.0] * 10
    wait = rate_take(user_id=1)
    assert 0 < wait <= 60 / settings.CHAT_RATE_PER_MINUTE  # 100 a minute: the next in at most 0.6 s
    assert rate_take(user_id=2) == 0.0  # per user


@pytest.mark.django_db
@pytest.mark.usefixtures("layer")
def test_rate_limited_message_is_not_stored_and_a_retry_of_a_stored_one_passes(make_user, make_room, settings):
    settings.CHAT_RATE_BURST = 2
    settings.CHAT_RATE_PER_MINUTE = 1
    alice, room = make_user("alice"), make_room()
    message_post(room=room, user=alice, body="1", client_id="c1")
    message_post(room=room, user=alice, body="2", client_id="c2")
    with pytest.raises(ProtocolError) as raised:
        message_post(room=room, user=alice, body="3", client_id="c3")
    assert raised.value.code == "rate_limited"
    assert message_post(room=room, user=alice, body="2", client_id="c2")[1] is False
    assert list(Message.objects.values_list("body", flat=True).order_by("id")) == ["1", "2"]


@pytest.mark.django_db
def test_staff_and_author_may_delete_others_may_not(make_user, make_room):
    alice, bob, mod, room = make_user("alice"), make_user("bob"), make_user("mod", is_staff=True), make_room()
    first = message_post(room=room, user=alice, body="a", client_id="c1")[0]
    second = message_post(room=room, user=alice, body="b", client_id="c2")[0]
    with pytest.raises(PermissionDenied):
        message_delete(user=bob, message_id=first["id"])
    message_delete(user=alice, message_id=first["id"])
    message_delete(user=mod, message_id=second["id"])
    assert Message.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(("title", "slug"), [("General Chat", "general-chat"), ("  Café au lait! ", "cafe-au-lait")])
def test_room_create_makes_a_slug_from_the_name(make_user, title, slug):
    room = room_create(title=title, user=make_user("alice"))
    assert room.slug == slug and room.title == title.strip()


@pytest.mark.django_db
@pytest.mark.parametrize("title", ["!!!", "日本語", "---"])
def test_room_create_refuses_a_name_without_a_slug(make_user, title):
    with pytest.raises(ValidationError):
        room_create(title=title, user=make_user("alice"))


@pytest.mark.django_db
def test_room_create_refuses_a_taken_name(make_user):
    alice = make_user("alice")
    room_create(title="Lobby", user=alice)
    with pytest.raises(ValidationError):
        room_create(title="lobby", user=alice)


@pytest.mark.django_db
@pytest.mark.parametrize("title", ["dm 1 2", "DM-10-3", "dm--4--5"])
def test_room_create_refuses_the_slugs_of_direct_rooms(make_user, title):
    with pytest.raises(ValidationError) as raised:
        room_create(title=title, user=make_user("alice"))
    assert raised.value.code == "reserved"
    assert not Room.objects.exists()


@pytest.mark.django_db
def test_opening_a_public_room_makes_one_membership_with_its_past_read(make_user, make_room):
    alice, bob, room = make_user("alice"), make_user("bob"), make_room("lobby")
    earlier = message_post(room=room, user=bob, body="before alice came", client_id="c1")[0]
    first = room_enter(slug="lobby", user=alice)
    again = room_enter(slug="lobby", user=alice)
    assert first.pk == again.pk and first.room == room
    # A newcomer has missed nothing: the room's past counts as read.
    assert first.last_read_id == earlier["id"]
    assert Membership.objects.filter(room=room).count() == 1


@pytest.mark.django_db
def test_entering_a_missing_room_or_anothers_direct_room_is_refused_without_a_trace(make_user):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    room = room_direct_open(user=alice, other=bob)
    with pytest.raises(RoomForbidden):
        room_enter(slug=room.slug, user=carol)
    with pytest.raises(RoomMissing):
        room_enter(slug="nowhere", user=carol)
    assert not Membership.objects.filter(user=carol).exists()
    assert not Room.objects.filter(slug="nowhere").exists()
    assert room_enter(slug=room.slug, user=bob).room == room


@pytest.mark.django_db
def test_a_direct_room_is_one_room_for_both_people_whoever_opens_it(make_user):
    alice, bob = make_user("alice"), make_user("bob")
    room = room_direct_open(user=bob, other=alice)
    assert room_direct_open(user=alice, other=bob) == room
    low, high = sorted((alice.pk, bob.pk))
    assert room.slug == f"dm-{low}-{high}" and room.kind == "direct"
    assert set(room.memberships.values_list("user__username", flat=True)) == {"alice", "bob"}
    with pytest.raises(ValueError):
        room_direct_open(user=alice, other=alice)


@pytest.mark.django_db
def test_leaving_takes_a_public_room_off_and_a_direct_rooms_members_are_fixed(make_user, make_room):
    alice, bob, room = make_user("alice"), make_user("bob"), make_room("lobby")
    room_enter(slug="lobby", user=alice)
    assert membership_leave(room=room, user=alice) is True
    assert not Membership.objects.filter(user=alice).exists()
    direct = room_direct_open(user=alice, other=bob)
    with pytest.raises(PermissionDenied):
        membership_leave(room=direct, user=alice)
    assert direct.memberships.count() == 2


@pytest.mark.django_db
def test_mentions_are_existing_active_users_any_case_never_inside_an_address(make_user, make_room):
    room = make_room("lobby")
    for name in ("alice", "Bob", "bob.smith", "dave"):
        make_user(name)
    make_user("gone", is_active=False)
    body = "@ALICE and @bob, @bob.smith. @dave! mail me at carol@alice.com @nobody @gone @"
    assert mentions_find(body=body, room=room) == {"alice", "Bob", "bob.smith", "dave"}
    assert mentions_find(body="no at sign here", room=room) == set()


@pytest.mark.django_db
def test_a_direct_room_mentions_only_its_two_members(make_user):
    alice, bob = make_user("alice"), make_user("bob")
    make_user("carol")
    room = room_direct_open(user=alice, other=bob)
    assert mentions_find(body="@bob look, @carol said so", room=room) == {"bob"}


@pytest.mark.django_db
def test_a_stored_message_keeps_its_mentions_sorted_once_each(make_user, make_room):
    room, alice = make_room("lobby"), make_user("alice")
    make_user("zed")
    frame, _ = message_post(room=room, user=alice, body="@zed @alice @Zed hi @zed", client_id="c1")
    assert frame["mentions"] == ["alice", "zed"]
    assert Message.objects.get().mentions == " alice zed "


@pytest.mark.django_db
def test_the_read_marker_moves_only_forward_and_only_to_a_message_of_its_room(make_user, make_room):
    alice, bob = make_user("alice"), make_user("bob")
    lobby, other = make_room("lobby"), make_room("other")
    membership = room_enter(slug="lobby", user=alice)
    ids = [message_post(room=lobby, user=bob, body=f"@alice {n}", client_id=f"c{n}")[0]["id"] for n in range(3)]
    elsewhere = message_post(room=other, user=bob, body="x", client_id="o1")[0]["id"]

    marker = membership_read(room=lobby, user=alice, up_to=ids[1])
    assert (marker.up_to, marker.unread, marker.mentions) == (ids[1], 1, 1)
    assert membership_read(room=lobby, user=alice, up_to=ids[0]) is None  # never back
    assert membership_read(room=lobby, user=alice, up_to=ids[1]) is None  # there already
    for foreign in (elsewhere, ids[-1] + 1000):
        with pytest.raises(ProtocolError) as raised:
            membership_read(room=lobby, user=alice, up_to=foreign)
        assert raised.value.code == "invalid"
    membership.refresh_from_db()
    assert membership.last_read_id == ids[1]

    # A message deleted since the page showed it is still of this room.
    message_delete(user=bob, message_id=ids[2])
    assert membership_read(room=lobby, user=alice, up_to=ids[2]).unread == 0


@pytest.mark.django_db
def test_a_message_into_a_room_of_a_thousand_members_is_one_write(make_user, make_room, django_user_model):
    room = make_room()
    members = django_user_model.objects.bulk_create(django_user_model(username=f"m{n}") for n in range(1000))
    Membership.objects.bulk_create(Membership(room=room, user=member) for member in members)
    alice = make_user("alice")
    with CaptureQueriesContext(connection) as queries:
        message_post(room=room, user=alice, body="hello, everyone", client_id="c1")
    statements = [query["sql"].split()[0] for query in queries if not query["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    # The retry check by client_id, the room's change seq, the message and its change-log row: no per-member
    # counter to keep.
    assert statements == ["SELECT", "UPDATE", "INSERT", "INSERT"]


@pytest.mark.django_db
def test_reading_a_public_room_left_in_another_tab_joins_it_again(make_user, make_room):
    alice, bob, room = make_user("alice"), make_user("bob"), make_room("lobby")
    room_enter(slug="lobby", user=alice)
    first = message_post(room=room, user=bob, body="one", client_id="c1")[0]["id"]
    second = message_post(room=room, user=bob, body="two", client_id="c2")[0]["id"]
    membership_leave(room=room, user=alice)
    marker = membership_read(room=room, user=alice, up_to=first)
    # Back as a newcomer, whose marker starts at the newest message.
    assert (marker.up_to, marker.unread) == (second, 0)
    assert Membership.objects.get(room=room, user=alice).last_read_id == second
