"""Every page under the Content-Security-Policy with no inline code; production settings that refuse to be weak."""

import os
import subprocess
import sys
from html.parser import HTMLParser

import pytest
from django.test import Client

from presence_site.testing import BASE_DIR

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-9"


class InlineCodeFinder(HTMLParser):
    """Collects what a policy without 'unsafe-inline' would block: inline scripts, styles and handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script" and not names.get("src") and names.get("type") != "application/json":
            self.problems.append(f"inline <script> {attrs}")
        if tag == "style":
            self.problems.append("<style> element")
        for name, value in attrs:
            if name == "style":
                self.problems.append(f"style attribute on <{tag}>")
            if name.startswith("on"):
                self.problems.append(f"{name} handler on <{tag}>")
            if name in {"href", "src", "action"} and (value or "").strip().lower().startswith("javascript:"):
                self.problems.append(f"javascript: URL on <{tag}>")


def inline_code(html: str) -> list[str]:
    finder = InlineCodeFinder()
    finder.feed(html)
    return finder.problems


def directives(header: str) -> dict[str, list[str]]:
    parts = (part.split() for part in header.split(";") if part.strip())
    return {name: values for name, *values in parts}


@pytest.fixture
def pages(make_user, settings):
    """(client, path, expected status) for every page the site renders."""
    alice = make_user("alice")
    admin = make_user("root", is_staff=True, is_superuser=True)
    anonymous, member, staff = Client(), Client(), Client()
    member.force_login(alice)
    staff.force_login(admin)
    locked = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        locked.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    return locked, [
        (anonymous, "get", "/accounts/login/", 200),
        (anonymous, "get", "/accounts/signup/", 200),
        (anonymous, "post", "/accounts/signup/", 400),  # the form with its errors
        (anonymous, "post", "/accounts/login/", 200),  # a wrong password for another name
        (locked, "post", "/accounts/login/", 429),
        (member, "get", "/", 200),
        (member, "get", "/accounts/password/", 200),
        (member, "get", "/accounts/password/done/", 200),
        (anonymous, "get", "/admin/login/", 200),
        (staff, "get", "/admin/", 200),
        (staff, "get", "/admin/auth/user/", 200),
        (staff, "get", f"/admin/auth/user/{alice.pk}/change/", 200),
        (staff, "get", "/admin/presence/connection/", 200),
    ]


def test_every_page_has_the_policy_and_no_inline_code(pages):
    locked, pages = pages
    for client, method, path, status in pages:
        data = (
            {"username": "alice" if client is locked else "nobody", "password": "wrong"} if method == "post" else None
        )
        response = getattr(client, method)(path, data)
        assert response.status_code == status, path
        policy = directives(response["Content-Security-Policy"])
        assert policy["script-src"] == ["'self'"], path
        assert policy["style-src"] == ["'self'"], path
        assert policy["default-src"] == ["'none'"], path
        assert policy["frame-ancestors"] == ["'none'"], path
        assert policy["connect-src"] == ["'self'", "ws://testserver"], path
        assert inline_code(response.content.decode()) == [], path


def test_the_socket_origin_follows_the_page_scheme_and_host(make_user, settings):
    settings.ALLOWED_HOSTS = ["presence.example.com"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    response = Client().get("/accounts/login/", HTTP_HOST="presence.example.com:8443", HTTP_X_FORWARDED_PROTO="https")
    assert directives(response["Content-Security-Policy"])["connect-src"] == [
        "'self'",
        "wss://presence.example.com:8443",
    ]


def test_the_finder_sees_inline_code():
    assert inline_code('<script>alert(1)</script><p style="x" onclick="y"></p><a href="javascript:z">') == [
        "inline <script> []",
        "style attribute on <p>",
        "onclick handler on <p>",
        "javascript: URL on <a>",
    ]
    assert inline_code('<script type="application/json" id="d">{}</script><script src="/a.js"></script>') == []


def _production(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_"))}
    env.update(
        DEBUG="0",
        SECRET_KEY="a-long-random-test-key-" + "x" * 40,
        ALLOWED_HOSTS="presence.example.com",
        DJANGO_SETTINGS_MODULE="presence_site.settings",
    )
    env.update(extra)
    return env


def _setup(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("hosts", ["*", "presence.example.com,*", " * "])
def test_production_settings_refuse_a_wildcard_host(hosts):
    result = _setup(_production(ALLOWED_HOSTS=hosts))
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "'*' turns off the WebSocket origin check" in result.stderr


@pytest.mark.parametrize("missing", ["SECRET_KEY", "ALLOWED_HOSTS"])
def test_production_settings_refuse_to_start_without(missing):
    result = _setup(_production(**{missing: ""}))
    assert result.returncode != 0 and f"DEBUG=0 needs {missing}" in result.stderr


def test_production_settings_pass_the_deploy_check():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=_production(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SOCKET_FRAME_RATE", 0),
        ("SOCKET_FRAME_BURST", 0),
        ("SOCKET_MAX_PER_USER", 0),
        ("SOCKET_SESSION_CHECK_INTERVAL", 0),
    ],
)
def test_abuse_limits_that_would_refuse_everything_fail_the_system_check(settings, name, value):
    from presence.checks import presence_timings

    setattr(settings, name, value)
    assert [problem.id for problem in presence_timings(None)] == ["presence.E006"]
