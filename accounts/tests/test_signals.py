import pytest
from channels.auth import login as channels_login
from channels.auth import logout as channels_logout
from channels.db import database_sync_to_async
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client

from accounts.models import LoggedInUser

pytestmark = pytest.mark.django_db


def test_two_devices_are_two_sessions_and_logging_out_one_keeps_the_other(make_user):
    user = make_user("alice")
    laptop, phone = Client(), Client()
    laptop.force_login(user)
    phone.force_login(user)
    assert LoggedInUser.objects.filter(user=user).count() == 2

    laptop.post("/accounts/logout/")
    remaining = LoggedInUser.objects.filter(user=user)
    assert [row.session_key for row in remaining] == [phone.session.session_key]


def test_logging_in_again_on_one_session_does_not_duplicate_it(make_user):
    user = make_user("bob")
    client = Client()
    client.force_login(user)
    client.force_login(user)
    assert LoggedInUser.objects.filter(user=user).count() == 1


@pytest.mark.django_db(transaction=True)
async def test_channels_login_and_logout_without_a_request(make_user):
    user = await database_sync_to_async(make_user)("carol")
    scope = {"session": SessionStore()}
    records = LoggedInUser.objects.filter(user=user)
    # Channels' login() and logout() send the auth signals with request=None.
    await channels_login(scope, user, backend="django.contrib.auth.backends.ModelBackend")
    assert await records.filter(session_key__isnull=True).acount() == 1
    await channels_logout(scope)
    assert not await records.aexists()


def test_anonymous_log_out_is_harmless(client):
    assert client.post("/accounts/logout/").status_code == 302
    assert LoggedInUser.objects.count() == 0
