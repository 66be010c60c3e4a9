"""The away state as services decide it: away only when every live socket is idle, each change once."""

import pytest

from presence.models import UserPresence
from presence.services import (
    StateChange,
    connection_close,
    connection_open,
    connection_state_set,
    presence_settle,
    presence_state_settle,
)

pytestmark = pytest.mark.django_db


def open_socket(user, name: str) -> None:
    connection_open(user=user, channel_name=name, server="test", endpoint="presence")


def test_away_only_when_every_socket_is_idle_and_announced_once(make_user):
    bob = make_user("bob")
    open_socket(bob, "laptop")
    open_socket(bob, "phone")
    assert connection_state_set(channel_name="laptop", user_id=bob.pk, idle=True) is None
    assert connection_state_set(channel_name="phone", user_id=bob.pk, idle=True) == StateChange("bob", "away")
    assert connection_state_set(channel_name="phone", user_id=bob.pk, idle=True) is None
    assert connection_state_set(channel_name="laptop", user_id=bob.pk, idle=False) == StateChange("bob", "online")
    assert connection_state_set(channel_name="laptop", user_id=bob.pk, idle=False) is None


def test_closing_the_active_socket_or_opening_a_new_one_moves_the_state(make_user):
    bob = make_user("bob")
    open_socket(bob, "hidden")
    open_socket(bob, "visible")
    connection_state_set(channel_name="hidden", user_id=bob.pk, idle=True)
    assert connection_close(channel_name="visible") is None
    assert presence_state_settle(user_id=bob.pk) == StateChange("bob", "away")
    open_socket(bob, "new-tab")
    assert presence_state_settle(user_id=bob.pk) == StateChange("bob", "online")


def test_a_leave_clears_away_so_the_next_join_is_active(make_user):
    bob = make_user("bob")
    open_socket(bob, "only")
    connection_state_set(channel_name="only", user_id=bob.pk, idle=True)
    assert UserPresence.objects.get(user=bob).away is True
    assert connection_close(channel_name="only") == bob.pk
    assert presence_settle(user_id=bob.pk) is not None
    assert UserPresence.objects.get(user=bob).away is False
    assert presence_state_settle(user_id=bob.pk) is None  # offline: no state to announce


def test_a_state_from_another_users_socket_changes_nothing(make_user):
    alice, bob = make_user("alice"), make_user("bob")
    open_socket(alice, "alices")
    open_socket(bob, "bobs")
    assert connection_state_set(channel_name="alices", user_id=bob.pk, idle=True) is None
    assert UserPresence.objects.get(user=alice).away is False
