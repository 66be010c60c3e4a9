import pytest


@pytest.fixture
def make_room():
    from chat.models import Room

    def make(slug: str = "lobby", *, title: str | None = None):
        return Room.objects.create(slug=slug, title=title or slug)

    return make


# The browser tests share the presence page's Chromium, live server and contexts.
from presence.tests.test_browser import browser, live_env, new_context, server  # noqa: E402, F401
