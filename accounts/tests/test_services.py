"""Ending a user's sessions: the accounts service the other apps listen to."""

from importlib import import_module

import pytest
from django.contrib.sessions.models import Session

from accounts.models import LoggedInUser
from accounts.services import user_sessions_end
from presence_site.testing import session_cookie


@pytest.mark.django_db
@pytest.mark.usefixtures("layer")
def test_user_sessions_end_deletes_every_session_of_that_user_only(make_user):
    alice, bob = make_user("alice"), make_user("bob")
    keys = [session_cookie(alice)[1], session_cookie(alice)[1]]
    bobs = session_cookie(bob)[1]
    assert user_sessions_end(user_id=alice.pk) == (2, 0)
    assert not Session.objects.filter(session_key__in=keys).exists()
    assert Session.objects.filter(session_key=bobs).exists()
    assert not LoggedInUser.objects.filter(user=alice).exists()
    assert LoggedInUser.objects.filter(user=bob).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("engine", ["django.contrib.sessions.backends.db", "django.contrib.sessions.backends.cache"])
def test_clearing_ended_sessions_takes_their_logged_in_records_with_them(make_user, settings, engine):
    from django.contrib.sessions.backends.db import SessionStore
    from django.utils import timezone

    from accounts.services import logged_in_user_record, sessions_clear_ended

    settings.SESSION_ENGINE = engine
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    live = session_cookie(alice)[1]
    expired = session_cookie(bob)[1]
    if engine.endswith(".db"):
        Session.objects.filter(session_key=expired).update(expire_date=timezone.now() - timezone.timedelta(seconds=1))
    else:
        import_module(engine).SessionStore(session_key=expired).delete()
    logged_in_user_record(user=carol, session_key="a-session-deleted-long-ago")
    logged_in_user_record(user=carol, session_key=None)  # a login without a request names no session

    assert sessions_clear_ended() == 2
    assert sorted(LoggedInUser.objects.values_list("user__username", "session_key")) == [
        ("alice", live),
        ("carol", None),
    ]
    assert not SessionStore().exists(expired)


@pytest.mark.django_db
def test_the_clean_up_command_says_what_it_did(make_user):
    from io import StringIO

    from django.core.management import call_command

    from accounts.services import logged_in_user_record

    logged_in_user_record(user=make_user("alice"), session_key="gone")
    out = StringIO()
    call_command("clear_ended_sessions", stdout=out)
    assert "1 logged-in records of ended sessions deleted" in out.getvalue()
    assert not LoggedInUser.objects.exists()
