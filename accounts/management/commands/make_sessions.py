"""Create users (if missing) and a logged-in session for each; print {username: session_key} as JSON.

For load generators and fault tests, which need many authenticated sockets
without a password hash per user:

    manage.py make_sessions alice bob            # named users
    manage.py make_sessions --prefix load --count 1000
"""

import json

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.sessions.backends.db import SessionStore
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.services import logged_in_user_record


class Command(BaseCommand):
    help = __doc__.split("\n\n")[0]

    def add_arguments(self, parser) -> None:
        parser.add_argument("usernames", nargs="*")
        parser.add_argument("--prefix", default="user")
        parser.add_argument("--count", type=int, default=0)
        parser.add_argument("--password", default=None, help="password for new users (default: unusable)")

    @transaction.atomic
    def handle(self, *args, usernames, prefix, count, password, **options) -> None:
        User = get_user_model()
        names = list(usernames) + [f"{prefix}{i:05d}" for i in range(count)]
        hashed = make_password(password)  # once for all: None gives an unusable password
        existing = set(User.objects.filter(username__in=names).values_list("username", flat=True))
        User.objects.bulk_create([User(username=name, password=hashed) for name in names if name not in existing])
        users = {user.username: user for user in User.objects.filter(username__in=names)}
        keys = {}
        for name in names:
            user = users[name]
            session = SessionStore()
            session["_auth_user_id"] = str(user.pk)
            session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
            session["_auth_user_hash"] = user.get_session_auth_hash()
            session.create()
            logged_in_user_record(user=user, session_key=session.session_key)
            keys[name] = session.session_key
        self.stdout.write(json.dumps(keys))
