import json
import re

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from presence.models import Connection, UserPresence

pytestmark = pytest.mark.django_db


def go_online(user) -> None:
    now = timezone.now()
    UserPresence.objects.create(user=user, online_since=now)
    Connection.objects.create(
        channel_name=f"c{user.pk}", user=user, server="s", endpoint="presence", opened_at=now, heartbeat_at=now
    )


def initial_state(html: str) -> dict:
    match = re.search(r'<script id="presence-initial" type="application/json">(.*?)</script>', html, re.S)
    assert match, "the page carries its initial state in json_script"
    return json.loads(match.group(1))


def test_presence_page_renders_online_and_recent_users_as_data(client, make_user):
    alice = make_user("alice")
    go_online(make_user("<b>x</b>"))
    UserPresence.objects.create(user=make_user("carol"), last_seen=timezone.now())
    client.force_login(alice)
    response = client.get("/")
    html = response.content.decode()
    assert response.status_code == 200
    state = initial_state(html)
    assert state["online_count"] == 1
    assert [u["username"] for u in state["users"]] == ["<b>x</b>"]
    assert [u["username"] for u in state["recent"]] == ["carol"]
    assert "<b>x</b>" not in html  # escaped wherever it appears
    assert "/static/js/socket.js" in html and "/static/js/presence.js" in html
    assert 'action="/accounts/logout/" method="post"' in html or 'method="post" action="/accounts/logout/"' in html


def test_presence_page_query_count_does_not_grow_with_users(client, make_user, django_assert_max_num_queries):
    client.force_login(make_user("alice"))
    for i in range(30):
        go_online(make_user(f"user{i}"))
    # session, user, online list, recently seen, the header's own status
    with django_assert_max_num_queries(5):
        assert client.get("/").status_code == 200


def test_static_files_are_served_by_the_app(client):
    response = client.get("/static/js/socket.js")
    assert response.status_code == 200
    assert b"PresenceSocket" in b"".join(response.streaming_content)


def test_admin_user_list_shows_online_and_last_seen_in_constant_queries(client, make_user, django_assert_num_queries):
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "root-pass-123456")
    client.force_login(admin)
    for i in range(20):
        user = make_user(f"user{i}")
        if i % 2:
            go_online(user)
        else:
            UserPresence.objects.create(user=user, last_seen=timezone.now())
    # session, user, groups for the filter, two counts, and one query for the
    # page of users with their presence joined and online annotated
    with django_assert_num_queries(6):
        response = client.get("/admin/auth/user/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "column-online" in html and "column-last_seen" in html
    online = client.get("/admin/auth/user/?online=yes")
    assert online.context["cl"].result_count == 10


def test_staff_see_sockets_and_logged_in_sessions(client, make_user):
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "root-pass-123456")
    go_online(make_user("alice"))
    client.force_login(admin)
    assert "alice" in client.get("/admin/presence/connection/").content.decode()
    page = client.get("/admin/accounts/loggedinuser/").content.decode()
    assert "root" in page
    assert client.session.session_key not in page


def test_non_staff_cannot_reach_admin(client, make_user):
    client.force_login(make_user("alice"))
    response = client.get("/admin/auth/user/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
