"""A newcomer's first minutes: no warnings from manage.py, a favicon, error pages that look like the product."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.template.loader import render_to_string
from django.test import Client
from django.urls import path

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def boom(request):
    raise RuntimeError("a bug in a view")


# For the test that drives a real 500 through Django's handler (pytest.mark.urls).
urlpatterns = [path("boom/", boom)]


def manage(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Run manage.py as `make run` does, on a fresh SQLite file, with RuntimeWarning made an error."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "DJANGO_"))}
    env.pop("DATABASE_URL", None)
    env.update(SQLITE_PATH=str(tmp_path / "first-run.sqlite3"), PYTHONWARNINGS="error::RuntimeWarning")
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )


def test_manage_py_prints_no_warning_on_a_fresh_database(tmp_path):
    for command in (["check"], ["migrate", "--noinput"], ["check"], ["makemigrations", "--check", "--dry-run"]):
        result = manage(tmp_path, *command)
        assert result.returncode == 0, result.stderr
        assert "Warning" not in result.stderr, result.stderr


def test_loading_the_asgi_application_touches_no_database(tmp_path):
    """What Daphne does first under `make run`: a query while the apps load would warn (and fail here)."""
    assert manage(tmp_path, "migrate", "--noinput").returncode == 0
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "DJANGO_"))}
    env.pop("DATABASE_URL", None)
    env.update(SQLITE_PATH=str(tmp_path / "first-run.sqlite3"), DJANGO_SETTINGS_MODULE="presence_site.settings")
    result = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", "import presence_site.asgi"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr


@pytest.mark.django_db
def test_favicon_ico_leads_to_the_icon(client):
    response = client.get("/favicon.ico", follow=True)
    assert response.status_code == 200
    assert response.redirect_chain[0][1] == 302
    assert b"".join(response.streaming_content)[:4] == b"\x00\x00\x01\x00"  # an ICO file
    response.close()


@pytest.mark.django_db
@pytest.mark.parametrize("page", ["/accounts/login/", "/admin/login/"])
def test_pages_name_the_svg_icon(client, page):
    response = client.get(page)
    assert b'<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in response.content
    icon = client.get("/static/favicon.svg")
    assert icon.status_code == 200 and icon["Content-Type"] == "image/svg+xml"
    icon.close()


@pytest.mark.django_db
def test_an_unknown_address_gets_the_products_404_page_not_a_list_of_urls(client, make_user):
    for logged_in in (False, True):
        if logged_in:
            client.force_login(make_user("alice"))
        response = client.get("/no/such/page/")
        assert response.status_code == 404
        text = response.content.decode()
        assert "Page not found" in text and 'class="topbar"' in text
        assert "URLconf" not in text and "admin/" not in text
        assert ('data-username="alice"' in text) is logged_in


@pytest.mark.django_db
def test_a_form_sent_without_its_csrf_token_gets_the_products_403_page():
    client = Client(enforce_csrf_checks=True)
    response = client.post("/accounts/login/", {"username": "alice", "password": "x"})
    assert response.status_code == 403
    assert "That form has expired" in response.content.decode()


@pytest.mark.urls(__name__)
def test_a_crash_gets_the_products_500_page_without_touching_the_database():
    # No django_db mark: any query while handling the error would fail the test.
    response = Client(raise_request_exception=False).get("/boom/")
    assert response.status_code == 500
    text = response.content.decode()
    assert "Something went wrong" in text and "a bug in a view" not in text


def test_the_500_page_renders_with_no_context_at_all():
    assert "Something went wrong" in render_to_string("500.html")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "status, text", [(404, "Page not found"), (403, "You can't open this page"), (500, "Something went wrong")]
)
def test_with_debug_the_products_error_pages_can_be_previewed(client, settings, status, text):
    settings.DEBUG = True
    response = client.get(f"/_errors/{status}/")
    assert response.status_code == status
    assert text in response.content.decode()


@pytest.mark.django_db
def test_without_debug_there_is_no_preview(client):
    assert client.get("/_errors/500/").status_code == 404
    assert "Page not found" in client.get("/_errors/500/").content.decode()
