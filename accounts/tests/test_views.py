import pytest
from django.contrib.auth import get_user_model

from accounts.models import LoggedInUser

pytestmark = pytest.mark.django_db

GOOD_PASSWORD = "violet-kettle-harbor-42"


def test_sign_up_creates_the_user_and_logs_them_in(client):
    response = client.post(
        "/accounts/signup/", {"username": "carol", "password1": GOOD_PASSWORD, "password2": GOOD_PASSWORD}
    )
    assert response.status_code == 302 and response["Location"] == "/"
    assert get_user_model().objects.filter(username="carol").exists()
    assert client.get("/").status_code == 200
    assert LoggedInUser.objects.filter(user__username="carol").count() == 1


@pytest.mark.parametrize(
    ("password1", "password2", "message"),
    [
        ("short1", "short1", "This password is too short"),
        ("password", "password", "This password is too common"),
        ("12345678901", "12345678901", "This password is entirely numeric"),
        (GOOD_PASSWORD, GOOD_PASSWORD + "x", "The two password fields didn"),
    ],
)
def test_sign_up_shows_password_errors_on_the_page(client, password1, password2, message):
    response = client.post("/accounts/signup/", {"username": "dave", "password1": password1, "password2": password2})
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not get_user_model().objects.filter(username="dave").exists()


def test_sign_up_with_a_taken_name_is_an_error(client, make_user):
    make_user("erin")
    response = client.post(
        "/accounts/signup/", {"username": "erin", "password1": GOOD_PASSWORD, "password2": GOOD_PASSWORD}
    )
    assert response.status_code == 400
    assert "A user with that username already exists." in response.content.decode()


def test_log_in_with_a_wrong_password_shows_an_error(client, make_user):
    make_user("frank")
    response = client.post("/accounts/login/", {"username": "frank", "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_log_in_then_log_out(client, make_user):
    make_user("gina", password=GOOD_PASSWORD)
    response = client.post("/accounts/login/", {"username": "gina", "password": GOOD_PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/"
    assert LoggedInUser.objects.filter(user__username="gina").count() == 1
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert LoggedInUser.objects.count() == 0
    assert client.get("/").status_code == 302


def test_presence_page_needs_log_in(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/")
