import pytest


@pytest.fixture
def make_room():
    from chat.models import Room

    def make(slug: str = "lobby", *, title: str | None = None):
        return Room.objects.create(slug=slug, title=title or slug)

    return make
