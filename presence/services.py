"""Presence writes: sockets opening and closing, heartbeats, the sweep of dead processes.

Every online/offline transition is decided under a lock on the user's
UserPresence row, so it happens exactly once even when two sockets of one user
open or close at the same moment on two processes.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import import_module

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection as database
from django.db import transaction
from django.db.models import Count, Exists, Max, OuterRef, Q
from django.utils import timezone

from presence.models import Connection, UserPresence
from presence.protocol import user_group
from realtime.broadcast import broadcast_sync
from realtime.fanout import sockets_end_sync


@dataclass(frozen=True)
class Join:
    username: str
    since: datetime


@dataclass(frozen=True)
class Leave:
    username: str
    last_seen: datetime


Transition = Join | Leave


@dataclass(frozen=True)
class StateChange:
    """An online user went away (every socket idle) or came back (one socket active)."""

    username: str
    state: str  # "away" or "online"
    # When it moved (shown as "away since 14:05"); not part of what the change is.
    at: datetime | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Status:
    """What a user says they are doing: a text and an emoji until a time, and do-not-disturb."""

    text: str
    emoji: str
    expires_at: datetime | None
    dnd: bool


@dataclass(frozen=True)
class StatusUpdate:
    """What a status.set changed: the status everyone may see, invisibility, and a join or leave it caused."""

    username: str
    status: Status | None
    invisible: bool
    status_changed: bool
    transition: "Join | Leave | None" = None


# A status.set field that the frame did not carry: left as it is.
UNSET = object()


class SessionEnded(Exception):
    """The socket's session was logged out before the socket could be registered."""


class TooManySockets(Exception):
    """The user already holds SOCKET_MAX_PER_USER live sockets."""


def _locked_presence(user_id: int) -> UserPresence:
    presence, _ = UserPresence.objects.select_for_update().get_or_create(user_id=user_id)
    return presence


@dataclass(frozen=True)
class Registration:
    """A socket to record as open: whose, where, with which session."""

    user_id: int
    username: str
    channel_name: str
    server: str
    endpoint: str
    session_key: str = ""
    topic: str = ""


@dataclass(frozen=True)
class Opened:
    """What recording a socket did: the Join if it made its user online; was_away if they were online but away."""

    join: Join | None
    was_away: bool = False


def _sessions_live(session_keys: set[str]) -> set[str]:
    """Which of these session keys still name a session (one query with the database session engines)."""
    store = import_module(settings.SESSION_ENGINE).SessionStore
    get_model = getattr(store, "get_model_class", None)
    if get_model is not None:
        return set(
            get_model()
            .objects.filter(session_key__in=list(session_keys), expire_date__gt=timezone.now())
            .values_list("session_key", flat=True)
        )
    return {key for key in session_keys if store().exists(key)}


@transaction.atomic
def connections_open(registrations: list[Registration]) -> list[Opened | Exception]:
    """Record sockets that opened together, in one transaction; for each, what it did or why it was refused.

    The same rules as one at a time, in the order given: each user's
    presence row is locked (in user order, so that two processes' rounds
    cannot deadlock), a socket whose session was logged out meanwhile is
    refused (SessionEnded), a user at SOCKET_MAX_PER_USER gets TooManySockets,
    and the first socket of a user who was offline is their one Join.
    """
    now = timezone.now()
    user_ids = sorted({r.user_id for r in registrations})
    known = set(UserPresence.objects.filter(user_id__in=user_ids).values_list("user_id", flat=True))
    if len(known) < len(user_ids):
        UserPresence.objects.bulk_create(
            [UserPresence(user_id=user_id) for user_id in user_ids if user_id not in known], ignore_conflicts=True
        )
    presences = {
        p.user_id: p for p in UserPresence.objects.select_for_update().filter(user_id__in=user_ids).order_by("user_id")
    }
    # A logout that ran between the handshake and here found no socket to close:
    # refuse the socket instead of letting it outlive its session.
    keys = {r.session_key for r in registrations if r.session_key}
    live_sessions = _sessions_live(keys) if keys else set()
    # Sockets of a dead process that no sweep has reached yet: the user vanished
    # from newer snapshots, so drop them and announce the user afresh.
    stale = Connection.objects.stale(now).filter(user_id__in=user_ids)
    stale_users = set(stale.values_list("user_id", flat=True))
    if stale_users:
        stale.delete()
    # Counted under the users' locks, so two handshakes on two processes cannot both take the last place.
    counts = dict(
        Connection.objects.filter(user_id__in=user_ids)
        .values("user_id")
        .annotate(n=Count("id"))
        .values_list("user_id", "n")
    )
    results: list[Opened | Exception] = []
    rows, changed = [], set()
    for registration in registrations:
        user_id = registration.user_id
        presence = presences[user_id]
        if registration.session_key and registration.session_key not in live_sessions:
            results.append(SessionEnded(registration.session_key))
            continue
        if counts.get(user_id, 0) >= settings.SOCKET_MAX_PER_USER:
            results.append(TooManySockets(user_id))
            continue
        counts[user_id] = counts.get(user_id, 0) + 1
        rows.append(
            (
                registration.channel_name,
                user_id,
                registration.session_key,
                registration.server,
                registration.endpoint,
                registration.topic,
            )
        )
        # online_since with no socket left means a leave is pending its grace
        # period (a page reload): the user never went offline, so no join.
        if presence.online_since is not None and user_id not in stale_users:
            results.append(Opened(join=None, was_away=presence.away))
            continue
        presence.online_since = now
        presence.away = False  # the new socket is active
        presence.away_since = None
        stale_users.discard(user_id)
        changed.add(user_id)
        # Invisible: online in truth; everyone else sees them offline.
        join = None if presence.invisible else Join(username=registration.username, since=now)
        results.append(Opened(join=join))
    _connections_insert(rows, now)
    if changed:
        # Every user the round brought online comes online the same way (bulk_update's CASE per row cost more).
        UserPresence.objects.filter(user_id__in=changed).update(online_since=now, away=False, away_since=None)
    return results


def _connections_insert(rows: list[tuple[str, int, str, str, str, str]], now: datetime) -> None:
    """Insert a round's Connection rows (channel name, user id, session key, server, endpoint, topic), opened now.

    One prepared INSERT run for every row: bulk_create built the statement
    field by field and row by row, which cost a storm of handshakes more
    than running it (docs/benchmarks.md).
    """
    if not rows:
        return
    fields = ["channel_name", "user", "session_key", "server", "endpoint", "topic", "idle", "opened_at", "heartbeat_at"]
    quote = database.ops.quote_name
    columns = ", ".join(quote(Connection._meta.get_field(name).column) for name in fields)
    at = database.ops.adapt_datetimefield_value(now)
    with database.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {quote(Connection._meta.db_table)} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})",
            [(*row, False, at, at) for row in rows],
        )


def connection_open(
    *,
    user: AbstractBaseUser,
    channel_name: str,
    server: str,
    endpoint: str,
    session_key: str = "",
    topic: str = "",
) -> Join | None:
    """Record one open socket; return the Join if it made the user online (connections_open() for one)."""
    registration = Registration(
        user_id=user.pk,
        username=user.get_username(),
        channel_name=channel_name,
        server=server,
        endpoint=endpoint,
        session_key=session_key or "",
        topic=topic,
    )
    (opened,) = connections_open([registration])
    if isinstance(opened, Exception):
        raise opened
    return opened.join


@transaction.atomic
def connection_close(*, channel_name: str) -> int | None:
    """Forget a closed socket; return its user's id when no live socket of theirs is left."""
    connection = Connection.objects.filter(channel_name=channel_name).only("user_id").first()
    if connection is None:
        return None
    presence = _locked_presence(connection.user_id)
    connection.delete()
    now = timezone.now()
    if not presence.invisible:
        # An invisible user's last_seen stays when they went invisible: what others were shown.
        presence.last_seen = now
        presence.save(update_fields=["last_seen"])
    if Connection.objects.live(now).filter(user_id=presence.user_id).exists():
        return None
    return presence.user_id


@transaction.atomic
def presence_settle(*, user_id: int) -> Leave | None:
    """Mark a user offline if none of their sockets is live any more; return the Leave if so."""
    presence = _locked_presence(user_id)
    if presence.online_since is None:
        return None
    now = timezone.now()
    if Connection.objects.live(now).filter(user_id=user_id).exists():
        return None
    presence.online_since = None
    presence.away = False
    presence.away_since = None
    presence.last_seen = presence.last_seen or now
    presence.save(update_fields=["online_since", "away", "away_since", "last_seen"])
    if presence.invisible:
        return None  # everyone else saw them leave when they went invisible
    return Leave(username=presence.user.get_username(), last_seen=presence.last_seen)


def status_of(presence: UserPresence, *, now: datetime | None = None) -> Status | None:
    """The status others see on a user (None: nothing set, or it has expired)."""
    expires_at = presence.status_expires_at
    if expires_at is not None and expires_at <= (now or timezone.now()):
        return None
    if not presence.status_text and not presence.status_emoji and not presence.dnd:
        return None
    return Status(text=presence.status_text, emoji=presence.status_emoji, expires_at=expires_at, dnd=presence.dnd)


@transaction.atomic
def presence_status_set(
    *,
    user: AbstractBaseUser,
    text: object = UNSET,
    emoji: object = UNSET,
    expires_at: object = UNSET,
    dnd: object = UNSET,
    invisible: object = UNSET,
) -> StatusUpdate:
    """Set what a user says they are doing, do-not-disturb and invisibility (UNSET: unchanged).

    The values are validated already (presence.protocol.status_fields). Going
    invisible while online is a leave for everyone else, coming back a join.
    """
    presence = _locked_presence(user.pk)
    now = timezone.now()
    before = (status_of(presence, now=now), presence.invisible)
    if status_of(presence, now=now) is None:
        # An expired status the heartbeat has not cleared yet starts from nothing.
        presence.status_text, presence.status_emoji, presence.status_expires_at, presence.dnd = "", "", None, False
    for name, value in (
        ("status_text", text),
        ("status_emoji", emoji),
        ("status_expires_at", expires_at),
        ("dnd", dnd),
        ("invisible", invisible),
    ):
        if value is not UNSET:
            setattr(presence, name, value)
    if not presence.status_text and not presence.status_emoji and not presence.dnd:
        presence.status_expires_at = None  # nothing left to expire
    transition = None
    if presence.invisible != before[1] and presence.online_since is not None:
        if presence.invisible:
            presence.last_seen = now
            transition = Leave(username=user.get_username(), last_seen=now)
        else:
            transition = Join(username=user.get_username(), since=now)
    presence.save()
    after = (status_of(presence, now=now), presence.invisible)
    return StatusUpdate(
        username=user.get_username(),
        status=after[0],
        invisible=presence.invisible,
        status_changed=after[0] != before[0],
        transition=transition,
    )


def presence_status_expire() -> list[tuple[int, str]]:
    """Clear every status whose time has come; return (user id, name) of the users this call cleared (each once)."""
    now = timezone.now()
    due = list(
        UserPresence.objects.filter(status_expires_at__lte=now).values_list(
            "user_id", "status_expires_at", "user__username"
        )
    )
    cleared = []
    for user_id, expires_at, username in due:
        # Conditional on the expiry read: of several processes doing this at once, one clears it and announces it.
        if UserPresence.objects.filter(user_id=user_id, status_expires_at=expires_at).update(
            status_text="", status_emoji="", status_expires_at=None, dnd=False
        ):
            cleared.append((user_id, username))
    return cleared


def connection_server_close(*, server: str) -> list[int]:
    """Forget every socket row one process still holds (it is stopping); return the users left with no live socket."""
    user_ids = set(Connection.objects.filter(server=server).values_list("user_id", flat=True))
    Connection.objects.filter(server=server).delete()
    live = set(Connection.objects.live().filter(user_id__in=user_ids).values_list("user_id", flat=True))
    return sorted(user_ids - live)


def connection_heartbeat(*, server: str) -> int:
    """Refresh every socket that one process holds, in one statement."""
    return Connection.objects.filter(server=server).update(heartbeat_at=timezone.now())


def _settle_state(presence: UserPresence) -> StateChange | None:
    # The caller holds the lock on the presence row.
    if presence.online_since is None:
        return None
    live = Connection.objects.live().filter(user_id=presence.user_id)
    away = live.exists() and not live.filter(idle=False).exists()
    if away == presence.away:
        return None
    now = timezone.now()
    presence.away = away
    presence.away_since = now if away else None
    presence.save(update_fields=["away", "away_since"])
    if presence.invisible:
        return None
    return StateChange(username=presence.user.get_username(), state="away" if away else "online", at=now)


@transaction.atomic
def connection_state_set(*, channel_name: str, user_id: int, idle: bool) -> StateChange | None:
    """Record a tab going idle or active; return the StateChange if the user's aggregate state moved."""
    presence = _locked_presence(user_id)
    Connection.objects.filter(channel_name=channel_name, user_id=user_id).update(idle=idle)
    return _settle_state(presence)


@transaction.atomic
def presence_state_settle(*, user_id: int) -> StateChange | None:
    """Re-derive online/away after a socket opened or closed; return the StateChange if it moved."""
    return _settle_state(_locked_presence(user_id))


def presence_sweep() -> tuple[int, list[Leave]]:
    """Drop sockets whose process stopped refreshing them; return how many, and the leaves."""
    now = timezone.now()
    stale = Connection.objects.stale(now)
    last_beats = dict(stale.values("user_id").annotate(last=Max("heartbeat_at")).values_list("user_id", "last"))
    removed, leaves = 0, []
    for user_id, last_beat in last_beats.items():
        with transaction.atomic():
            presence = _locked_presence(user_id)
            count, _ = Connection.objects.stale(now).filter(user_id=user_id).delete()
            removed += count
            if presence.last_seen is None or presence.last_seen <= last_beat:
                presence.last_seen = last_beat
                presence.save(update_fields=["last_seen"])
                # Settled under the same lock: a socket registering between the delete and a later settle
                # found the user online with no stale row, so nobody announced them (their only live row is new).
                # A user seen later than the dead rows (a socket of a live process closed, its grace pending)
                # is left to the orphans below.
                if (leave := presence_settle(user_id=user_id)) is not None:
                    leaves.append(leave)
    # Users still marked online with no live socket: any whose leave was pending on a
    # process that died during the grace period.
    # The process of the socket that closed settles its leave itself, after the
    # grace and whatever its database thread and layer make it wait: a heartbeat
    # interval more is that process's time to do so, not a missed leave.
    grace_cutoff = now - timedelta(seconds=settings.PRESENCE_LEAVE_GRACE + settings.PRESENCE_HEARTBEAT_INTERVAL)
    orphans = (
        UserPresence.objects.filter(online_since__isnull=False)
        .exclude(Exists(Connection.objects.live(now).filter(user_id=OuterRef("user_id"))))
        .exclude(last_seen__gte=grace_cutoff)
        .values_list("user_id", flat=True)
    )
    leaves += [leave for user_id in list(orphans) if (leave := presence_settle(user_id=user_id))]
    return removed, leaves


def session_channels(*, session_key: str) -> list[str]:
    """The channel names of the sockets opened with one session."""
    return list(Connection.objects.filter(session_key=session_key).values_list("channel_name", flat=True))


def user_channels(*, user_id: int, except_session_key: str | None = None) -> list[str]:
    """The channel names of every socket of one user, but those of one session if given."""
    connections = Connection.objects.filter(user_id=user_id)
    if except_session_key:
        connections = connections.exclude(session_key=except_session_key)
    return list(connections.values_list("channel_name", flat=True))


def connection_session_rekey(*, old_session_key: str, new_session_key: str) -> int:
    """Follow a session whose key was cycled (a password change keeps the session, new key)."""
    if not old_session_key or not new_session_key or old_session_key == new_session_key:
        return 0
    return Connection.objects.filter(session_key=old_session_key).update(session_key=new_session_key)


def connection_sessions_ended(*, server: str) -> list[str]:
    """The channel names of one process's sockets whose session expired or was deleted, or whose user is inactive.

    A user deactivated by a bulk update fires no signal, so no receiver closed
    their sockets (accounts/signals.py covers a save). One query with the database
    session engines; other engines are asked once per distinct session.
    """
    connections = Connection.objects.filter(server=server).exclude(session_key="")
    store = import_module(settings.SESSION_ENGINE).SessionStore
    get_model = getattr(store, "get_model_class", None)
    if get_model is not None:
        live = get_model().objects.filter(session_key=OuterRef("session_key"), expire_date__gt=timezone.now())
        ended = ~Exists(live) | Q(user__is_active=False)
        return list(connections.filter(ended).values_list("channel_name", flat=True))
    rows = list(connections.values_list("channel_name", "session_key", "user__is_active"))
    gone = {key for key in {key for _, key, _ in rows} if not store().exists(key)}
    return [channel for channel, key, active in rows if key in gone or not active]


def session_sockets_close(*, session_key: str) -> int:
    """Close, with 4000, every socket opened with this session, on any process; return how many were told."""
    return sockets_end_sync(session_channels(session_key=session_key), "logged out")


def user_sockets_close(*, user_id: int, except_session_key: str | None = None, reason: str = "session ended") -> int:
    """Close, with 4000, every socket of this user on every process, but those of one session if given."""
    return sockets_end_sync(user_channels(user_id=user_id, except_session_key=except_session_key), reason)


def user_broadcast(*, user_id: int, frame: dict, label: str) -> bool:
    """Send a frame to every open socket of one user, on any endpoint and process, from sync code."""
    return broadcast_sync(user_group(user_id), frame, label=label)
