"""What staff do to users and sessions in the admin, and the audit log that records it."""

import pytest
from channels.db import database_sync_to_async
from django.contrib.sessions.models import Session
from django.test import Client

from accounts.models import AuditEntry, LoggedInUser
from presence_site.testing import answers_ping, close_code, session_cookie
from realtime import protocol as transport

pytestmark = pytest.mark.django_db

Action = AuditEntry.Action


@pytest.fixture
def root(make_user):
    return make_user("root", is_staff=True, is_superuser=True)


@pytest.fixture
def staff_client(root) -> Client:
    client = Client()
    client.force_login(root)
    return client


def entries() -> list[tuple[str, str, str]]:
    """The audit log as the admin lists it: (by, what, whom), newest first."""
    return list(AuditEntry.objects.values_list("actor_name", "action", "target_name"))


def change_user(client: Client, user, **flags: bool):
    """Post the admin's change form of a user as staff would, with some of its checkboxes changed."""
    user.refresh_from_db()
    data = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
        "_save": "Save",
    }
    for flag in ("is_active", "is_staff", "is_superuser"):
        if flags.get(flag, getattr(user, flag)):
            data[flag] = "on"
    response = client.post(f"/admin/auth/user/{user.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    return response


def test_deactivating_and_reactivating_a_user_in_the_admin_is_in_the_audit_log(staff_client, make_user):
    bob = make_user("bob")
    change_user(staff_client, bob, is_active=False)
    assert entries() == [("root", Action.USER_DEACTIVATED, "bob")]
    change_user(staff_client, bob, is_active=True)
    assert entries()[0] == ("root", Action.USER_REACTIVATED, "bob")


def test_granting_and_removing_staff_is_in_the_audit_log(staff_client, make_user):
    bob = make_user("bob")
    change_user(staff_client, bob, is_staff=True, is_superuser=True)
    assert set(entries()) == {("root", Action.STAFF_GRANTED, "bob"), ("root", Action.SUPERUSER_GRANTED, "bob")}
    change_user(staff_client, bob, is_staff=False, is_superuser=False)
    assert set(entries()[:2]) == {("root", Action.STAFF_REMOVED, "bob"), ("root", Action.SUPERUSER_REMOVED, "bob")}


def test_a_save_that_changes_no_flag_records_nothing(staff_client, make_user):
    change_user(staff_client, make_user("bob", first_name="Bob"))
    assert entries() == []


def test_end_all_sessions_logs_the_user_out_everywhere_and_is_in_the_audit_log(staff_client, make_user):
    bob, carol = make_user("bob"), make_user("carol")
    laptop, phone = session_cookie(bob)[0], session_cookie(bob)[0]
    carols = session_cookie(carol)[0]
    response = staff_client.post("/admin/auth/user/", {"action": "end_all_sessions", "_selected_action": [bob.pk]})
    assert response.status_code == 302
    assert "Ended 2 sessions" in staff_client.get(response["Location"]).content.decode()
    for client in (laptop, phone):
        assert client.get("/").status_code == 302  # to the log-in page
    assert carols.get("/").status_code == 200
    assert not LoggedInUser.objects.filter(user=bob).exists()
    assert entries() == [("root", Action.SESSIONS_ENDED, "bob")]
    assert AuditEntry.objects.get().detail == "2 sessions: ended by staff"


def test_the_action_is_offered_by_that_name_on_users(staff_client):
    assert (
        '<option value="end_all_sessions">End all sessions</option>'
        in staff_client.get("/admin/auth/user/").content.decode()
    )


def test_deleting_a_logged_in_session_logs_that_browser_out_and_only_it(staff_client, make_user):
    bob = make_user("bob")
    laptop, laptop_key = session_cookie(bob)
    phone, _ = session_cookie(bob)
    row = LoggedInUser.objects.get(session_key=laptop_key)
    response = staff_client.post(f"/admin/accounts/loggedinuser/{row.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert laptop.get("/").status_code == 302
    assert phone.get("/").status_code == 200
    assert not Session.objects.filter(session_key=laptop_key).exists()
    assert entries() == [("root", Action.SESSIONS_ENDED, "bob")]


def test_deleting_logged_in_sessions_in_bulk_ends_each_of_them(staff_client, make_user):
    bob, carol = make_user("bob"), make_user("carol")
    clients = [session_cookie(bob)[0], session_cookie(carol)[0]]
    rows = list(LoggedInUser.objects.filter(user__in=[bob, carol]).values_list("pk", flat=True))
    response = staff_client.post(
        "/admin/accounts/loggedinuser/", {"action": "delete_selected", "_selected_action": rows, "post": "yes"}
    )
    assert response.status_code == 302
    assert [client.get("/").status_code for client in clients] == [302, 302]
    assert sorted(entries()) == [("root", Action.SESSIONS_ENDED, "bob"), ("root", Action.SESSIONS_ENDED, "carol")]


def test_the_sessions_list_shows_when_each_session_expires(staff_client, make_user):
    _, key = session_cookie(make_user("bob"))
    expires = Session.objects.get(session_key=key).expire_date
    page = staff_client.get("/admin/accounts/loggedinuser/")
    assert page.context["cl"].result_list.get(session_key=key).expire_date == expires
    assert "column-expires" in page.content.decode()


@pytest.mark.django_db(transaction=True)
async def test_deleting_a_logged_in_session_closes_its_sockets_with_4000(make_user, open_socket):
    bob, root = await database_sync_to_async(
        lambda: (make_user("bob"), make_user("root", is_staff=True, is_superuser=True))
    )()
    doomed, _, key = await open_socket("/ws/presence/", bob)
    other, *_ = await open_socket("/ws/presence/", bob)

    def delete_in_admin():
        row = LoggedInUser.objects.get(session_key=key)
        client = Client()
        client.force_login(root)
        return client.post(f"/admin/accounts/loggedinuser/{row.pk}/delete/", {"post": "yes"}).status_code

    assert await database_sync_to_async(delete_in_admin)() == 302
    assert await close_code(doomed) == transport.CLOSE_SESSION_ENDED
    assert await answers_ping(other)


def test_the_audit_log_is_read_only_in_the_admin(staff_client, make_user, root):
    from accounts.services import audit_record

    entry = audit_record(actor=root, action=Action.USER_DEACTIVATED, target=make_user("bob"))
    base = "/admin/accounts/auditentry/"
    listing = staff_client.get(base)
    assert listing.status_code == 200 and "user deactivated" in listing.content.decode()
    assert staff_client.get(f"{base}add/").status_code == 403
    assert staff_client.get(f"{base}{entry.pk}/delete/").status_code == 403
    page = staff_client.get(f"{base}{entry.pk}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert staff_client.post(f"{base}{entry.pk}/change/", {"action": "staff_granted"}).status_code == 403
    bulk = staff_client.post(base, {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"})
    assert AuditEntry.objects.filter(pk=entry.pk, action=Action.USER_DEACTIVATED).exists()
    assert bulk.status_code in (200, 302)


def test_the_audit_log_filters_by_actor_and_action(staff_client, make_user, root):
    from accounts.services import audit_record

    mod, bob = make_user("mod", is_staff=True), make_user("bob")
    audit_record(actor=root, action=Action.USER_DEACTIVATED, target=bob)
    audit_record(actor=mod, action=Action.SESSIONS_ENDED, target=bob)
    audit_record(actor=mod, action=Action.USER_DEACTIVATED, target=root)
    listing = staff_client.get("/admin/accounts/auditentry/?actor_name=mod&action__exact=user_deactivated")
    rows = [(entry.actor_name, entry.action, entry.target_name) for entry in listing.context["cl"].result_list]
    assert rows == [("mod", Action.USER_DEACTIVATED, "root")]
    # The filters offer every actor in the log, and every action.
    filters = listing.content.decode()
    assert "actor_name=root" in filters and "action__exact=sessions_ended" in filters
