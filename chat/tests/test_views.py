"""The chat pages and the history endpoint, through Django's test client."""

import json
import re

import pytest
from django.test import Client
from django.urls import reverse

from chat.models import Membership, Message, Room
from chat.services import message_post, room_direct_open, room_enter

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_client(client, make_user):
    alice = make_user("alice")
    client.force_login(alice)
    client.user = alice
    return client


def fill(room, author, count: int) -> list[int]:
    Message.objects.bulk_create(
        Message(room=room, author=author, body=f"m{i}", client_id=f"c{i}") for i in range(count)
    )
    return list(Message.objects.filter(room=room).order_by("id").values_list("id", flat=True))


def page_text(response, slug: str) -> str:
    """A page without its per-request CSRF token and with the slug it names left out."""
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", response.content.decode()).replace(slug, "<slug>")


def initial_of(response) -> dict:
    content = response.content.decode()
    return json.loads(content.split('id="chat-initial" type="application/json">')[1].split("</script>")[0])


@pytest.mark.parametrize("path", ["/chat/", "/chat/lobby/", "/chat/lobby/messages", "/chat/dm/alice/"])
def test_pages_need_a_login(client, make_room, make_user, path):
    make_room("lobby")
    make_user("alice")
    response = client.get(path)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_room_list_shows_my_rooms_and_the_others_in_a_fixed_number_of_queries(
    alice_client, make_room, make_user, django_assert_num_queries
):
    bob = make_user("bob")
    for slug in ("a", "b", "c", "d"):
        make_room(slug, title=f"Room {slug}")
    room_enter(slug="b", user=alice_client.user)
    room_enter(slug="d", user=alice_client.user)
    message_post(room=Room.objects.get(slug="b"), user=bob, body="<i>hello</i> @alice", client_id="c1")
    # session, user, my rooms (with counts and newest messages), the other rooms (with who is here),
    # the header's own status
    with django_assert_num_queries(5):
        response = alice_client.get("/chat/")
    assert response.status_code == 200
    assert [room["slug"] for room in response.context["rooms"]] == ["b", "d"]
    assert [room["slug"] for room in response.context["other_rooms"]] == ["a", "c"]
    content = response.content.decode()
    assert 'href="/chat/a/"' in content and 'href="/chat/b/"' in content
    assert "&lt;i&gt;hello&lt;/i&gt; @alice" in content and "<i>hello" not in content


def test_creating_a_room_redirects_to_it(alice_client):
    response = alice_client.post("/chat/", {"name": "Book Club"})
    assert response.status_code == 302 and response["Location"] == "/chat/book-club/"
    assert Room.objects.get(slug="book-club").created_by == alice_client.user


@pytest.mark.parametrize("name", ["lobby", "Lobby!", "", "!!!"])
def test_a_taken_or_invalid_name_is_a_form_error(alice_client, make_room, name):
    make_room("lobby")
    response = alice_client.post("/chat/", {"name": name})
    assert response.status_code == 200
    assert response.context["form"].errors["name"]
    assert Room.objects.count() == 1


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("Invoices\u202e", "bidirectional"),
        ("Ring\x07", "control character"),
        ("Escape \x1b[31m", "control character"),
        ("\u200b\u200d", "empty"),
    ],
)
def test_a_room_name_the_text_validator_refuses_is_a_form_error(alice_client, name, fragment):
    response = alice_client.post("/chat/", {"name": name})
    assert response.status_code == 200
    assert any(fragment in error for error in response.context["form"].errors["name"])
    assert fragment in response.content.decode()
    assert not Room.objects.exists()


def test_a_right_to_left_room_name_is_kept(alice_client):
    response = alice_client.post("/chat/", {"name": "Café שלום 2"})
    assert response.status_code == 302
    assert Room.objects.get().title == "Café שלום 2"


def test_a_room_that_does_not_exist_is_a_404_page_offering_to_create_it_by_post(alice_client):
    response = alice_client.get("/chat/genral/")
    assert response.status_code == 404
    assert not Room.objects.exists()
    content = response.content.decode()
    assert 'method="post"' in content and 'action="/chat/"' in content and 'value="genral"' in content
    assert "Create #genral" in content
    response = alice_client.post("/chat/", {"name": "genral"})
    assert response.status_code == 302 and response["Location"] == "/chat/genral/"
    assert alice_client.get("/chat/genral/").status_code == 200


def test_a_link_on_another_site_creates_no_room_and_joins_none(alice_client, make_room):
    # A cross-site GET cannot create it, and a cross-site POST has no CSRF token.
    make_room("lobby")
    alice_client.get("/chat/lobby/", HTTP_REFERER="https://elsewhere.example/")
    assert not Membership.objects.exists()
    Room.objects.all().delete()
    alice_client.get("/chat/spam-room/", HTTP_REFERER="https://elsewhere.example/")
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(alice_client.user)
    assert csrf_client.post("/chat/", {"name": "spam-room"}).status_code == 403
    assert not Room.objects.exists()


def test_an_empty_room_says_so(alice_client, make_room):
    make_room("lobby")
    response = alice_client.get("/chat/lobby/")
    assert response.status_code == 200
    assert "No messages yet" in response.content.decode()


def test_the_page_carries_my_marker_and_only_its_socket_makes_me_a_member(alice_client, make_room, make_user):
    room = make_room("lobby")
    bob = make_user("bob")
    room_enter(slug="lobby", user=bob)
    seen = message_post(room=room, user=bob, body="before", client_id="c1")[0]
    # A GET (a link, an image on another site) joins nothing; the page shows the room's past as read.
    initial = initial_of(alice_client.get("/chat/lobby/"))
    assert initial["last_read"] == seen["id"] and initial["kind"] == "public" and initial["members"] == ["bob"]
    assert not Membership.objects.filter(room=room, user=alice_client.user).exists()
    # The socket (same origin only) joins; the marker stays until she reads.
    room_enter(slug="lobby", user=alice_client.user)
    message_post(room=room, user=bob, body="after", client_id="c2")
    assert initial_of(alice_client.get("/chat/lobby/"))["last_read"] == seen["id"]


def test_leaving_is_post_only_and_takes_the_room_off_my_list(alice_client, make_room):
    make_room("lobby")
    room_enter(slug="lobby", user=alice_client.user)
    assert alice_client.get("/chat/lobby/leave").status_code == 405
    response = alice_client.post("/chat/lobby/leave")
    assert response.status_code == 302 and response["Location"] == "/chat/"
    assert not Membership.objects.exists()
    assert alice_client.post("/chat/missing/leave").status_code == 404


def test_dm_link_redirects_to_the_one_direct_room_of_the_two(alice_client, make_user):
    bob = make_user("bob")
    response = alice_client.get("/chat/dm/bob/")
    low, high = sorted((alice_client.user.pk, bob.pk))
    assert response.status_code == 302 and response["Location"] == f"/chat/dm-{low}-{high}/"
    assert alice_client.get("/chat/dm/bob/")["Location"] == response["Location"]
    assert Room.objects.get().kind == "direct"
    page = alice_client.get(response["Location"])
    assert page.status_code == 200 and initial_of(page)["title"] == "bob" and initial_of(page)["kind"] == "direct"
    assert "Leave" not in page.content.decode()  # a direct room's members are fixed
    assert alice_client.post(f"{response['Location']}leave").status_code == 403


@pytest.mark.parametrize("name", ["alice", "nobody", "gone"])
def test_dm_with_myself_an_unknown_or_inactive_user_is_a_404(alice_client, make_user, name):
    make_user("gone", is_active=False)
    assert alice_client.get(f"/chat/dm/{name}/").status_code == 404
    assert not Room.objects.exists()


def test_a_direct_room_of_others_is_a_404_everywhere(alice_client, make_user):
    bob, carol = make_user("bob"), make_user("carol")
    room = room_direct_open(user=bob, other=carol)
    message = message_post(room=room, user=bob, body="secret", client_id="c1")[0]
    for response in (
        alice_client.get(f"/chat/{room.slug}/"),
        alice_client.get(f"/chat/{room.slug}/messages"),
        alice_client.post(f"/chat/{room.slug}/leave"),
        alice_client.post(f"/chat/{room.slug}/messages/{message['id']}/delete"),
    ):
        assert response.status_code == 404
        assert "secret" not in response.content.decode() and "Create #" not in response.content.decode()
    # The same page as a direct room that does not exist: nothing tells the two apart.
    assert page_text(alice_client.get("/chat/dm-998-999/"), "dm-998-999") == page_text(
        alice_client.get(f"/chat/{room.slug}/"), room.slug
    )
    assert alice_client.get("/api/rooms").json() == {"rooms": []}
    assert room.slug not in alice_client.get("/chat/").content.decode()
    assert not Membership.objects.filter(user=alice_client.user).exists()


def test_api_rooms_lists_my_rooms_with_counts(alice_client, make_room, make_user, django_assert_num_queries):
    bob = make_user("bob")
    room = make_room("lobby", title="Lobby")
    room_enter(slug="lobby", user=alice_client.user)
    sent = message_post(room=room, user=bob, body="hi @alice", client_id="c1")[0]
    # session, user, the rooms
    with django_assert_num_queries(3):
        response = alice_client.get("/api/rooms")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response.json() == {
        "rooms": [
            {
                "slug": "lobby",
                "title": "Lobby",
                "kind": "public",
                "unread": 1,
                "mentions": 1,
                "last_read": None,
                # A live frame also carries the room's cursor; a stored one does not.
                "last_message": {key: value for key, value in sent.items() if key != "cursor"},
            }
        ]
    }


def test_api_rooms_answers_anonymous_and_other_methods_with_json_errors(alice_client):
    response = Client().get("/api/rooms")
    assert response.status_code == 401 and response.json()["error"] == "not_logged_in" and response.json()["detail"]
    response = alice_client.post("/api/rooms")
    assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize("slug", ["New-Room", "a_b", "x" * 51, "caf%C3%A9"])
def test_an_invalid_slug_is_a_404(alice_client, slug):
    assert alice_client.get(f"/chat/{slug}/").status_code == 404
    assert not Room.objects.exists()


def test_room_page_carries_history_as_json_and_html_as_text(alice_client, make_room):
    room = make_room("lobby")
    payload = "</script><script>alert(1)</script>"
    Message.objects.create(room=room, author=alice_client.user, body=payload, client_id="c1")
    response = alice_client.get("/chat/lobby/")
    content = response.content.decode()
    assert "<script>alert(1)" not in content
    initial = initial_of(response)
    assert initial["messages"][0]["body"] == payload
    assert initial["me"] == "alice" and initial["room"] == "lobby" and initial["moderator"] is False


def test_history_pages_back_with_before_and_limit(alice_client, make_room, django_assert_num_queries):
    room = make_room("lobby")
    ids = fill(room, alice_client.user, 120)
    # session, user, room, page
    with django_assert_num_queries(4):
        page = alice_client.get("/chat/lobby/messages").json()
    assert [m["id"] for m in page["messages"]] == ids[-50:] and page["has_more"] is True
    page = alice_client.get(f"/chat/lobby/messages?before={ids[-50]}&limit=60").json()
    assert [m["id"] for m in page["messages"]] == ids[10:70] and page["has_more"] is True
    page = alice_client.get(f"/chat/lobby/messages?before={ids[10]}&limit=50").json()
    assert [m["id"] for m in page["messages"]] == ids[:10] and page["has_more"] is False
    message = page["messages"][0]
    assert set(message) == {
        "type",
        "id",
        "room",
        "username",
        "body",
        "sent_at",
        "client_id",
        "html",
        "edited_at",
        "reactions",
        "mentions",
    }
    assert "reaction_summary" not in message


@pytest.mark.parametrize("query", ["before=abc", "before=-1", "limit=0", "limit=101", "limit=x", "before=1.5"])
def test_history_refuses_bad_parameters(alice_client, make_room, query):
    make_room("lobby")
    response = alice_client.get(f"/chat/lobby/messages?{query}")
    assert response.status_code == 400 and response.json()["error"] == "invalid"


def test_history_of_a_missing_room_is_a_404(alice_client):
    assert alice_client.get("/chat/missing/messages").status_code == 404
    assert not Room.objects.exists()


def test_delete_is_post_only_and_for_staff_or_the_author(alice_client, make_room, make_user, client):
    room = make_room("lobby")
    bob = make_user("bob")
    message = Message.objects.create(room=room, author=bob, body="bob's", client_id="c1")
    url = f"/chat/lobby/messages/{message.id}/delete"
    assert alice_client.get(url).status_code == 405
    assert alice_client.post(url).status_code == 403
    assert alice_client.post(f"/chat/other/messages/{message.id}/delete").status_code == 404
    alice_client.force_login(bob)
    assert alice_client.post(url).status_code == 200
    assert not Message.objects.exists()


def test_admin_lists_rooms_with_message_counts_and_searches_messages(client, make_user, make_room):
    admin = make_user("admin", is_staff=True, is_superuser=True)
    client.force_login(admin)
    lobby, other = make_room("lobby"), make_room("other")
    fill(lobby, admin, 3)
    Message.objects.create(room=other, author=admin, body="needle", client_id="x")
    response = client.get(reverse("admin:chat_room_changelist"))
    assert response.status_code == 200
    rows = {room.slug: room.message_count for room in response.context["cl"].result_list}
    assert rows == {"lobby": 3, "other": 1}
    response = client.get(reverse("admin:chat_message_changelist"), {"q": "needle"})
    assert [m.body for m in response.context["cl"].result_list] == ["needle"]
    response = client.get(reverse("admin:chat_message_changelist"), {"room__id__exact": lobby.id})
    assert len(response.context["cl"].result_list) == 3


def test_admin_room_list_costs_the_same_queries_for_more_rooms(client, make_user, make_room):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    admin = make_user("admin", is_staff=True, is_superuser=True)
    client.force_login(admin)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(reverse("admin:chat_room_changelist")).status_code == 200
        return len(captured)

    make_room("a")
    few = queries()
    for slug in ("b", "c", "d", "e", "f"):
        fill(make_room(slug), admin, 2)
    assert queries() == few


# ---------- /api/: search, around, edit history ----------


def post(room, author, body: str) -> int:
    from chat.services import message_post

    frame, _ = message_post(room=room, user=author, body=body)
    return frame["id"]


@pytest.mark.parametrize(
    "path",
    ["/api/search?q=hello", "/api/rooms/lobby/messages?around=1", "/api/rooms/lobby/messages/1/edits"],
)
def test_api_answers_anonymous_with_401_json(client, make_room, path):
    make_room("lobby")
    response = client.get(path)
    assert response.status_code == 401 and response.json()["error"] == "not_logged_in"


def test_search_finds_messages_with_every_word_newest_first(alice_client, make_room, make_user):
    lobby, other = make_room("lobby"), make_room("other")
    bob = make_user("bob")
    first = post(lobby, bob, "The deploy is broken again")
    post(lobby, bob, "lunch anyone?")
    second = post(other, alice_client.user, "deploy fixed, not broken any more")
    post(other, bob, "the deployment went fine")  # another word: not a match
    found = alice_client.get("/api/search", {"q": "broken DEPLOY"}).json()
    assert [m["id"] for m in found["messages"]] == [second, first] and found["has_more"] is False
    assert found["messages"][0]["room"] == "other" and found["messages"][0]["html"]
    only_lobby = alice_client.get("/api/search", {"q": "deploy", "room": "lobby"}).json()
    assert [m["id"] for m in only_lobby["messages"]] == [first]
    page = alice_client.get("/api/search", {"q": "deploy", "limit": 1}).json()
    assert [m["id"] for m in page["messages"]] == [second] and page["has_more"] is True


def test_search_treats_query_syntax_as_words(alice_client, make_room):
    lobby = make_room("lobby")
    hit = post(lobby, alice_client.user, 'she said "NEAR" body: OR * stop')
    for q in ['"near', "body:", "OR", "*", "near)(", "NOT stop", "-stop"]:
        response = alice_client.get("/api/search", {"q": q})
        assert response.status_code == 200, (q, response.content)
    assert [m["id"] for m in alice_client.get("/api/search", {"q": '"near" body:'}).json()["messages"]] == [hit]
    assert alice_client.get("/api/search", {"q": "***"}).json() == {"messages": [], "has_more": False}


def test_search_follows_edits_and_deletions(alice_client, make_room):
    from chat.services import message_delete, message_edit

    lobby = make_room("lobby")
    message_id = post(lobby, alice_client.user, "colour")
    message_edit(room=lobby, user=alice_client.user, message_id=message_id, body="color")
    assert alice_client.get("/api/search", {"q": "colour"}).json()["messages"] == []
    assert len(alice_client.get("/api/search", {"q": "color"}).json()["messages"]) == 1
    message_delete(user=alice_client.user, message_id=message_id)
    assert alice_client.get("/api/search", {"q": "color"}).json()["messages"] == []


def test_search_lists_only_rooms_the_user_may_read(alice_client, make_room, make_user):
    # One may-read rule (Room.objects.readable_by) behind search, around= and edit history: a direct room of
    # bob and alice is invisible to carol, exactly like a room that does not exist.
    bob, carol = make_user("bob"), make_user("carol")
    lobby = make_room("lobby")
    direct = room_direct_open(user=bob, other=alice_client.user)
    post(lobby, bob, "password rotation")
    secret = post(direct, bob, "password is hunter2")
    carol_client = Client()
    carol_client.force_login(carol)

    found = carol_client.get("/api/search", {"q": "password"}).json()
    assert [m["room"] for m in found["messages"]] == ["lobby"]
    assert carol_client.get("/api/search", {"q": "hunter2"}).json()["messages"] == []
    assert carol_client.get("/api/search", {"q": "password", "room": direct.slug}).status_code == 404
    assert carol_client.get(f"/api/rooms/{direct.slug}/messages", {"around": secret}).status_code == 404
    assert carol_client.get(f"/api/rooms/{direct.slug}/messages/{secret}/edits").status_code == 404
    assert carol_client.get(f"/chat/{direct.slug}/", {"around": secret}).status_code == 404

    # Its members find it.
    found = alice_client.get("/api/search", {"q": "password"}).json()
    assert sorted(m["room"] for m in found["messages"]) == sorted(["lobby", direct.slug])
    around = alice_client.get(f"/api/rooms/{direct.slug}/messages", {"around": secret}).json()
    assert [m["id"] for m in around["messages"]] == [secret]


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"q": ""},
        {"q": "   "},
        {"q": "x" * 201},
        {"q": "a", "limit": "0"},
        {"q": "a", "limit": "51"},
        {"q": "a", "limit": "ten"},
    ],
)
def test_bad_search_requests_get_400_json(alice_client, query):
    response = alice_client.get("/api/search", query)
    assert response.status_code == 400 and response.json()["error"] == "invalid" and response.json()["detail"]


def test_search_is_one_query_for_the_page(alice_client, make_room, django_assert_num_queries):
    from chat.selectors import message_search

    lobby = make_room("lobby")
    Message.objects.bulk_create(
        Message(room=lobby, author=alice_client.user, body=f"needle {i}", client_id=f"c{i}") for i in range(30)
    )

    # The page, with its rooms rule as a subquery and its reactions on each row.
    with django_assert_num_queries(1):
        messages, more = message_search(user=alice_client.user, q="needle", limit=20)
    assert len(messages) == 20 and more


def test_around_gives_context_on_both_sides_oldest_first(alice_client, make_room):
    lobby = make_room("lobby")
    ids = fill(lobby, alice_client.user, 40)
    page = alice_client.get("/api/rooms/lobby/messages", {"around": ids[20], "limit": 5}).json()
    assert [m["id"] for m in page["messages"]] == ids[15:26]
    edge = alice_client.get("/api/rooms/lobby/messages", {"around": ids[1], "limit": 5}).json()
    assert [m["id"] for m in edge["messages"]] == ids[0:7]


@pytest.mark.parametrize(
    "path, status",
    [
        ("/api/rooms/lobby/messages?around=999999", 404),
        ("/api/rooms/lobby/messages?around=x", 400),
        ("/api/rooms/lobby/messages", 400),
        ("/api/rooms/lobby/messages?around=1&limit=51", 400),
        ("/api/rooms/NOPE/messages?around=1", 404),
        ("/api/rooms/missing/messages?around=1", 404),
        ("/api/rooms/lobby/messages/999999/edits", 404),
    ],
)
def test_bad_around_and_edits_requests_get_json_errors(alice_client, make_room, path, status):
    make_room("lobby")
    response = alice_client.get(path)
    assert response.status_code == status and response.json()["error"]


def test_around_an_id_of_another_room_is_404(alice_client, make_room):
    make_room("lobby")
    elsewhere = post(make_room("other"), alice_client.user, "not here")
    assert alice_client.get("/api/rooms/lobby/messages", {"around": elsewhere}).status_code == 404


def test_edit_history_lists_earlier_versions_oldest_first(alice_client, make_room):
    from chat.services import message_edit

    lobby = make_room("lobby")
    message_id = post(lobby, alice_client.user, "first")
    message_edit(room=lobby, user=alice_client.user, message_id=message_id, body="second")
    message_edit(room=lobby, user=alice_client.user, message_id=message_id, body="third")
    message = Message.objects.get(id=message_id)
    edits = alice_client.get(f"/api/rooms/lobby/messages/{message_id}/edits").json()["edits"]
    assert [edit["body"] for edit in edits] == ["first", "second"]
    assert edits[0]["edited_at"] == message.sent_at.isoformat().replace("+00:00", "Z")
    assert message.body == "third" and message.edited_at is not None


def test_search_page_and_header_box(alice_client):
    page = alice_client.get("/chat/search/", {"q": "<script>x</script>"})
    assert page.status_code == 200
    assert b"<script>x</script>" not in page.content and b"&lt;script&gt;x&lt;/script&gt;" in page.content
    assert b'action="/chat/search/"' in alice_client.get("/chat/").content


def test_no_room_may_take_the_search_pages_slug(alice_client):
    response = alice_client.post("/chat/", {"name": "Search"})
    assert response.status_code == 200 and not Room.objects.filter(slug="search").exists()


def test_search_splits_words_alike_on_both_databases(alice_client, make_room):
    lobby = make_room("lobby")
    snake = post(lobby, alice_client.user, "call snake_case(value) now")
    cafe = post(lobby, alice_client.user, "Café au lait")
    assert [m["id"] for m in alice_client.get("/api/search", {"q": "case value"}).json()["messages"]] == [snake]
    assert [m["id"] for m in alice_client.get("/api/search", {"q": "CAFÉ"}).json()["messages"]] == [cafe]
    # Accents are kept (PostgreSQL's "simple" configuration does not remove them, so FTS5 does not either).
    assert alice_client.get("/api/search", {"q": "cafe"}).json()["messages"] == []
