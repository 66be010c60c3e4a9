"""Chat writes, called without a socket."""

import threading

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection

from chat.models import Message, Room
from chat.ratelimit import rate_take
from chat.services import body_clean, message_delete, message_post, room_create, room_open
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
def test_room_open_creates_once(make_user):
    alice = make_user("alice")
    assert room_open(slug="new-room", user=alice) == room_open(slug="new-room", user=alice)
    assert Room.objects.count() == 1
