"""Who is on a socket: Channels' AuthMiddlewareStack, with the sessions and users of handshakes read together.

Channels' AuthMiddleware reads each handshake's session and then its user,
two queries and two hops to the database thread per socket: a quarter of a
process's time in a storm of reconnects (docs/benchmarks.md). Here the
handshakes that arrive together are answered by one round (realtime.batch):
one query for their sessions, one for their users. What a socket ends up with
is what Channels' get_user() gives it: the session's user when its backend is
configured, the user may log in and the session's auth hash verifies; the
anonymous user otherwise (and a session whose hash does not verify is
flushed, as Channels does).
"""

from channels.auth import AuthMiddleware
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model, load_backend
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from realtime.batch import Batch
from realtime.runtime import Runtime, runtime


def sessions_load(stores: list) -> None:
    """Load every database-backed session among stores in one query, as each store's load() would have."""
    by_model: dict[type, dict[str, list]] = {}
    for store in stores:
        if isinstance(store, DatabaseSessionStore) and store.session_key and not hasattr(store, "_session_cache"):
            by_model.setdefault(store.get_model_class(), {}).setdefault(store.session_key, []).append(store)
    now = timezone.now()
    for model, keyed in by_model.items():
        rows = dict(
            model.objects.filter(session_key__in=list(keyed), expire_date__gt=now).values_list(
                "session_key", "session_data"
            )
        )
        for key, same in keyed.items():
            for store in same:
                if key in rows:
                    store._session_cache = store.decode(rows[key])
                else:
                    # What load() does for a session that is gone or expired: no key, nothing in it.
                    store._session_key = None
                    store._session_cache = {}


def users_of_sessions(stores: list) -> list:
    """The user of each session (AnonymousUser when there is none), reading sessions and users in bulk."""
    sessions_load(stores)
    wanted: list[tuple[object, object, object] | None] = []
    by_backend: dict[str, set] = {}
    for store in stores:
        try:
            user_id = get_user_model()._meta.pk.to_python(store[SESSION_KEY])
            backend_path = store[BACKEND_SESSION_KEY]
        except KeyError:
            wanted.append(None)
            continue
        if backend_path not in settings.AUTHENTICATION_BACKENDS:
            wanted.append(None)
            continue
        wanted.append((store, backend_path, user_id))
        by_backend.setdefault(backend_path, set()).add(user_id)
    found: dict[tuple[str, object], object] = {}
    for backend_path, user_ids in by_backend.items():
        backend = load_backend(backend_path)
        if type(backend).get_user is ModelBackend.get_user:
            users = get_user_model()._default_manager.in_bulk(list(user_ids))
            for user_id, user in users.items():
                if backend.user_can_authenticate(user):
                    found[backend_path, user_id] = user
        else:
            for user_id in user_ids:
                found[backend_path, user_id] = backend.get_user(user_id)
    users = []
    for entry in wanted:
        user = None
        if entry is not None:
            store, backend_path, user_id = entry
            user = found.get((backend_path, user_id))
            if user is not None and hasattr(user, "get_session_auth_hash"):
                session_hash = store.get(HASH_SESSION_KEY)
                if not (session_hash and constant_time_compare(session_hash, user.get_session_auth_hash())):
                    store.flush()
                    user = None
        users.append(user or AnonymousUser())
    return users


def users_of_sessions_each(stores: list) -> list:
    """users_of_sessions() for a round; a store that breaks it is answered alone, with its own error."""
    try:
        return users_of_sessions(stores)
    except Exception:
        if len(stores) == 1:
            raise
    answers = []
    for store in stores:
        try:
            answers.extend(users_of_sessions([store]))
        except Exception as error:
            answers.append(error)
    return answers


def session_users(runtime: Runtime) -> Batch:
    """This process's batch of session look-ups."""
    return Batch(runtime, users_of_sessions_each, name="session look-ups")


class BatchedAuthMiddleware(AuthMiddleware):
    """Channels' AuthMiddleware, its user read in a round with the other handshakes' (WebSocket scopes)."""

    async def resolve_scope(self, scope) -> None:
        if scope.get("type") != "websocket":
            await super().resolve_scope(scope)
            return
        store = scope["session"]._wrapped
        scope["user"]._wrapped = await runtime().local(session_users).submit(store)


def AuthMiddlewareStack(inner):  # noqa: N802 - Channels' name for the same stack
    """Cookies, the session, then the user: Channels' AuthMiddlewareStack with the batched user look-up."""
    return CookieMiddleware(SessionMiddleware(BatchedAuthMiddleware(inner)))
