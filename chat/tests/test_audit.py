"""Deleting messages and ending their authors' sessions: each is in the audit log, in the same transaction."""

import pytest
from django.test import Client

from accounts.models import AuditEntry
from chat import services
from chat.models import Message
from chat.services import message_post, messages_delete

pytestmark = pytest.mark.django_db

Action = AuditEntry.Action


def entries() -> list[tuple[str, str, str, str]]:
    return list(AuditEntry.objects.values_list("actor_name", "action", "target_name", "detail"))


@pytest.fixture
def spam(make_user, make_room):
    alice, room = make_user("alice"), make_room("lobby")
    return [message_post(room=room, user=alice, body=f"spam {n}", client_id=f"c{n}")[0]["id"] for n in range(2)]


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_deleting_messages_in_the_admin_records_who_deleted_whose_message(spam, make_user):
    root = logged_in(make_user("root", is_staff=True, is_superuser=True))
    response = root.post("/admin/chat/message/", {"action": "delete_selected", "_selected_action": spam, "post": "yes"})
    assert response.status_code == 302 and not Message.objects.exists()
    assert sorted(entries()) == [
        ("root", Action.MESSAGE_DELETED, "alice", f"message {spam[0]} in lobby"),
        ("root", Action.MESSAGE_DELETED, "alice", f"message {spam[1]} in lobby"),
    ]


def test_deleting_a_message_from_the_room_page_records_who_deleted_it(spam, make_user):
    mod = logged_in(make_user("mod", is_staff=True))
    assert mod.post(f"/chat/lobby/messages/{spam[0]}/delete").status_code == 200
    alice = logged_in(Message.objects.get(id=spam[1]).author)
    assert alice.post(f"/chat/lobby/messages/{spam[1]}/delete").status_code == 200
    assert entries() == [
        ("alice", Action.MESSAGE_DELETED, "alice", f"message {spam[1]} in lobby"),
        ("mod", Action.MESSAGE_DELETED, "alice", f"message {spam[0]} in lobby"),
    ]


def test_a_refused_deletion_records_nothing(spam, make_user):
    bob = logged_in(make_user("bob"))
    assert bob.post(f"/chat/lobby/messages/{spam[0]}/delete").status_code == 403
    assert entries() == []


def test_a_deletion_whose_record_fails_deletes_nothing(spam, make_user, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("the audit log is unavailable")

    monkeypatch.setattr(services, "audit_record_many", broken)
    with pytest.raises(RuntimeError):
        messages_delete(messages=Message.objects.filter(id=spam[0]), actor=make_user("mod", is_staff=True))
    assert Message.objects.filter(id=spam[0]).exists()


def test_ending_the_authors_sessions_from_the_messages_list_is_recorded(spam, make_user):
    root = logged_in(make_user("root", is_staff=True, is_superuser=True))
    alice = logged_in(Message.objects.get(id=spam[0]).author)
    response = root.post("/admin/chat/message/", {"action": "end_author_sessions", "_selected_action": spam})
    assert response.status_code == 302
    assert alice.get("/").status_code == 302
    assert entries() == [("root", Action.SESSIONS_ENDED, "alice", "1 session: ended by staff")]
