import pytest
from django.core.cache import caches


@pytest.fixture(autouse=True)
def fresh_rate_limits(request) -> None:
    """Start each test with no rate-limit state left by an earlier one (user ids get reused)."""
    if "layer" in request.fixturenames:
        request.getfixturevalue("layer")
    caches["default"].clear()


@pytest.fixture
def make_room(django_user_model):
    from chat.models import Room

    def make(slug: str = "lobby", *, title: str | None = None):
        return Room.objects.create(slug=slug, title=title or slug)

    return make


@pytest.fixture(autouse=True)
def quick_activity(settings) -> None:
    """room.activity at once after each message, as room presence is (root conftest's quick_presence)."""
    settings.CHAT_ACTIVITY_WINDOW = 0


@pytest.fixture(autouse=True)
def json_probed(request) -> None:
    """SQLite checks once per connection that it has JSON functions: not a query of the lists that tests count."""
    if "django_assert_num_queries" in request.fixturenames:
        from django.db import connection

        assert connection.features.supports_json_field
