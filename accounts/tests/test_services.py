"""Ending a user's sessions: the accounts service the other apps listen to."""

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
