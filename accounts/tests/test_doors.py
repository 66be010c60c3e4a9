"""The HTTP doors: CSRF, log-out method, session rotation, admin, brute-force throttling, password change."""

import logging

import pytest
from django.conf import settings as django_settings
from django.contrib.sessions.models import Session
from django.test import Client

from accounts.models import LoggedInUser

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-9"


def csrf_client() -> Client:
    return Client(enforce_csrf_checks=True)


def test_signup_without_csrf_token_is_forbidden(django_user_model):
    response = csrf_client().post(
        "/accounts/signup/", {"username": "mallory", "password1": PASSWORD, "password2": PASSWORD}
    )
    assert response.status_code == 403
    assert not django_user_model.objects.filter(username="mallory").exists()


def test_login_without_csrf_token_is_forbidden(make_user):
    make_user("alice")
    client = csrf_client()
    response = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 403
    assert "_auth_user_id" not in client.session


def test_logout_without_csrf_token_is_forbidden(make_user):
    client = csrf_client()
    client.force_login(make_user("alice"))
    assert client.post("/accounts/logout/").status_code == 403
    assert client.get("/").status_code == 200  # still logged in


def test_password_change_without_csrf_token_is_forbidden(make_user):
    client = csrf_client()
    client.force_login(make_user("alice"))
    response = client.post(
        "/accounts/password/",
        {"old_password": PASSWORD, "new_password1": "x-new-horse-4", "new_password2": "x-new-horse-4"},
    )
    assert response.status_code == 403


def test_login_with_the_token_works():
    # The control for the tests above: the same client with the form's token gets in.
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user("alice", password=PASSWORD)
    client = csrf_client()
    client.get("/accounts/login/")
    token = client.cookies["csrftoken"].value
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": PASSWORD, "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302


def test_get_logout_is_405(make_user):
    client = Client()
    client.force_login(make_user("alice"))
    assert client.get("/accounts/logout/").status_code == 405
    assert client.get("/").status_code == 200


def test_session_key_is_rotated_at_login(make_user):
    make_user("alice")
    client = Client()
    # An anonymous session the attacker could have planted (session fixation).
    session = client.session
    session["planted"] = True
    session.save()
    client.cookies[django_settings.SESSION_COOKIE_NAME] = session.session_key
    planted_key = session.session_key

    response = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    new_key = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    assert new_key != planted_key
    assert not Session.objects.filter(session_key=planted_key).exists()
    assert LoggedInUser.objects.get().session_key == new_key


def test_non_staff_cannot_reach_admin(make_user):
    client = Client()
    client.force_login(make_user("alice"))
    response = client.get("/admin/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert client.get("/admin/auth/user/").status_code == 302
    assert client.get("/admin/presence/connection/").status_code == 302


def test_staff_reach_admin(make_user):
    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    assert client.get("/admin/").status_code == 200


def _fail(client: Client, username: str, address: str):
    return client.post("/accounts/login/", {"username": username, "password": "wrong-guess"}, REMOTE_ADDR=address)


def test_brute_force_is_locked_out_with_a_429_page(make_user, settings):
    make_user("alice")
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _fail(client, "alice", "198.51.100.7").status_code == 200
    response = _fail(client, "alice", "198.51.100.7")
    assert response.status_code == 429
    assert "Too many failed log-ins" in response.content.decode()
    assert "accounts/locked_out.html" in [template.name for template in response.templates]
    # Even the right password is refused from there now.
    right = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD}, REMOTE_ADDR="198.51.100.7")
    assert right.status_code == 429


def test_lockout_is_per_user_name_and_address(make_user, settings):
    make_user("alice")
    make_user("bob")
    attacker = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _fail(attacker, "alice", "198.51.100.7")
    assert _fail(attacker, "alice", "198.51.100.7").status_code == 429
    # Alice from her own address, and bob behind the attacker's shared address, still log in.
    alice = Client().post("/accounts/login/", {"username": "alice", "password": PASSWORD}, REMOTE_ADDR="203.0.113.5")
    assert alice.status_code == 302
    bob = Client().post("/accounts/login/", {"username": "bob", "password": PASSWORD}, REMOTE_ADDR="198.51.100.7")
    assert bob.status_code == 302


def test_lockout_and_failures_are_logged_without_the_password(make_user, settings, caplog):
    make_user("alice")
    client = Client()
    with caplog.at_level(logging.INFO):
        for _ in range(settings.AXES_FAILURE_LIMIT):
            _fail(client, "alice", "198.51.100.7")
    lines = [r.getMessage() for r in caplog.records if r.name == "accounts.security"]
    assert any(
        "locked out" in line and "too many failed attempts" in line and "'alice'" in line and "198.51.100.7" in line
        for line in lines
    )
    assert any("log-in failed" in line and "'alice'" in line and "198.51.100.7" in line for line in lines)
    assert "wrong-guess" not in caplog.text
    assert "csrftoken" not in caplog.text and "sessionid" not in caplog.text


def test_signup_still_logs_in_with_axes_installed(django_user_model):
    client = Client()
    response = client.post("/accounts/signup/", {"username": "carol", "password1": PASSWORD, "password2": PASSWORD})
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_password_change_page_keeps_this_session_and_ends_the_others(make_user):
    user = make_user("alice")
    here, elsewhere = Client(), Client()
    here.force_login(user)
    elsewhere.force_login(user)
    assert here.get("/accounts/password/").status_code == 200
    response = here.post(
        "/accounts/password/",
        {"old_password": PASSWORD, "new_password1": "x-new-horse-4", "new_password2": "x-new-horse-4"},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == "/accounts/password/done/"
    assert here.get("/").status_code == 200
    assert elsewhere.get("/").status_code == 302
    assert list(LoggedInUser.objects.values_list("session_key", flat=True)) == [here.cookies["sessionid"].value]


def test_password_change_needs_login():
    response = Client().get("/accounts/password/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_the_test_clients_login_still_works(make_user):
    # authenticate() without a request (test client, shell) is not throttled, and not broken.
    make_user("alice")
    client = Client()
    assert client.login(username="alice", password=PASSWORD)
    assert client.get("/").status_code == 200
    assert not client.login(username="alice", password="wrong")
