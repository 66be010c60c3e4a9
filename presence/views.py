from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from presence.selectors import presence_online_users, presence_recently_seen


@login_required
def index(request: HttpRequest) -> HttpResponse:
    """The presence page: initial state in json_script, then live over /ws/presence/."""
    online = presence_online_users()
    initial = {"online_count": len(online), "users": online, "recent": presence_recently_seen()}
    return render(request, "presence/index.html", {"initial": initial, "online": online})
