"""Settings for Presence, read from the environment.

With nothing set, the embedded default runs: a SQLite file, the in-memory
channel layer and local-memory cache, one process. Setting REDIS_URL moves the
channel layer and the cache to Redis, DATABASE_URL moves the data to
PostgreSQL, and DEBUG=0 turns on the production checks. `.env.example` lists
every variable.
"""

import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of 1/0, true/false, yes/no, on/off; got {raw!r}.")


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number; got {raw!r}.") from None


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number; got {raw!r}.") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def database_from_url(url: str) -> dict:
    """Turn postgres://user:password@host:port/name?sslmode=... into a DATABASES entry."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ImproperlyConfigured(f"DATABASE_URL must be a postgres:// URL; got scheme {parts.scheme!r}.")
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    # PostgreSQL's JIT compiles a plan whose estimated cost passes jit_above_cost:
    # 0.3 to 0.6 s of compiling for /api/rooms, a 10 ms query (docs/benchmarks.md).
    # ?options=... in the URL replaces this.
    options.setdefault("options", "-c jit=off")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "CONN_MAX_AGE": env_int("DATABASE_CONN_MAX_AGE", 60),
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": options,
    }


DEBUG = env_bool("DEBUG", True)

SECRET_KEY = env_str("SECRET_KEY")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [])
if not DEBUG:
    if not SECRET_KEY:
        raise ImproperlyConfigured("DEBUG=0 needs SECRET_KEY: set it to a long random string.")
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("DEBUG=0 needs ALLOWED_HOSTS: the host names this site answers to, comma-separated.")
    if "*" in ALLOWED_HOSTS:
        # The WebSocket origin check trusts ALLOWED_HOSTS; "*" would turn it off.
        raise ImproperlyConfigured("ALLOWED_HOSTS must name hosts; '*' turns off the WebSocket origin check.")
else:
    SECRET_KEY = SECRET_KEY or "django-insecure-embedded-default-for-local-use-only"
    ALLOWED_HOSTS = ALLOWED_HOSTS or ["localhost", "127.0.0.1", "[::1]"]

CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    # First, so that `manage.py runserver` serves the ASGI application.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "csp",
    # Counts failed log-ins and locks out a user name at one address.
    "axes",
    "realtime",
    "accounts",
    "presence",
    "chat",
    "activity",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves static/ from the ASGI app itself, so that a bare `daphne` (or a
    # process behind any proxy) serves the whole app.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "presence_site.middleware.DatabaseUnavailableMiddleware",
    "presence.middleware.ContentSecurityPolicyMiddleware",
    # Last, as django-axes asks: it turns a lockout into the 429 page.
    "axes.middleware.AxesMiddleware",
]

# The django-axes backend first: it refuses a locked-out user name before the
# password is even checked; ModelBackend then does the checking.
AUTHENTICATION_BACKENDS = [
    "accounts.backends.LoginThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "presence_site.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "presence.context_processors.client_settings",
            ],
        },
    },
]

WSGI_APPLICATION = None
ASGI_APPLICATION = "presence_site.asgi.application"

DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": database_from_url(DATABASE_URL)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("SQLITE_PATH") or str(BASE_DIR / "db.sqlite3"),
            "OPTIONS": {
                # Several processes share the file: take the write lock when a
                # transaction starts, so that presence transitions serialize
                # instead of failing with "database is locked" mid-transaction.
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # A file, not memory, so that Daphne processes started by the tests share it
            # (SQLITE_TEST_PATH gives concurrent test runs in one checkout a file each).
            "TEST": {"NAME": env_str("SQLITE_TEST_PATH") or str(BASE_DIR / "var" / "test.sqlite3")},
            # Channels closes "old" connections around every database call;
            # with 0 each call would open the file and run the PRAGMAs again.
            "CONN_MAX_AGE": env_int("DATABASE_CONN_MAX_AGE", 60),
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")

# redis-py's default 5 s socket timeout is not longer than the layer's 5 s
# blocking read, which closes idle sockets with 1011; and its async pool holds
# 100 connections by default, which a burst of handshakes exhausts.
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 10.0)
REDIS_MAX_CONNECTIONS = env_int("REDIS_MAX_CONNECTIONS", 2000)
REDIS_CACHE_SOCKET_TIMEOUT = env_float("REDIS_CACHE_SOCKET_TIMEOUT", 2.0)

# Daphne's --websocket_timeout in the run commands; group membership must live
# at least as long, or long-lived sockets silently stop receiving.
WEBSOCKET_TIMEOUT = env_int("WEBSOCKET_TIMEOUT", 86400)
CHANNEL_GROUP_EXPIRY = env_int("CHANNEL_GROUP_EXPIRY", 86400)
CHANNEL_CAPACITY = env_int("CHANNEL_CAPACITY", 1000)

# Which Redis channel layer carries group messages; docs/benchmarks.md compares them.
CHANNEL_LAYER_BACKENDS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}
CHANNEL_LAYER_BACKEND = env_str("CHANNEL_LAYER_BACKEND", "core")
if CHANNEL_LAYER_BACKEND not in CHANNEL_LAYER_BACKENDS:
    raise ImproperlyConfigured(
        f"CHANNEL_LAYER_BACKEND must be one of {', '.join(CHANNEL_LAYER_BACKENDS)}; got {CHANNEL_LAYER_BACKEND!r}."
    )


def redis_channel_layers(url: str, backend: str | None = None) -> dict:
    """The channels-redis layer, sized and timed against the traps in DESIGN.md."""
    return {
        "default": {
            "BACKEND": CHANNEL_LAYER_BACKENDS[backend or CHANNEL_LAYER_BACKEND],
            "CONFIG": {
                "hosts": [
                    {
                        "address": url,
                        "socket_timeout": REDIS_SOCKET_TIMEOUT,
                        "socket_connect_timeout": 5,
                        "max_connections": REDIS_MAX_CONNECTIONS,
                    }
                ],
                "capacity": CHANNEL_CAPACITY,
                "group_expiry": CHANNEL_GROUP_EXPIRY,
                "prefix": env_str("CHANNEL_PREFIX", "presence"),
            },
        }
    }


def redis_caches(url: str) -> dict:
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": env_str("CHANNEL_PREFIX", "presence"),
            "OPTIONS": {
                # Short: the cache (the chat rate limit) is called from the process's
                # one database thread, which a hung Redis would otherwise hold.
                "socket_timeout": REDIS_CACHE_SOCKET_TIMEOUT,
                "socket_connect_timeout": REDIS_CACHE_SOCKET_TIMEOUT,
                "max_connections": REDIS_MAX_CONNECTIONS,
            },
        }
    }


def sentinel_channel_layers(sentinels: str, master: str, db: int = 0) -> dict:
    """The channels-redis layer on the master that Redis Sentinel names, followed through failovers."""
    from presence_site.sentinel import parse_sentinels

    layers = redis_channel_layers("unused")
    layers["default"]["CONFIG"]["hosts"] = [
        {
            "sentinels": parse_sentinels(sentinels),
            "master_name": master,
            "db": db,
            "socket_timeout": REDIS_SOCKET_TIMEOUT,
            "socket_connect_timeout": 5,
            "max_connections": REDIS_MAX_CONNECTIONS,
            "sentinel_kwargs": {"socket_timeout": 2, "socket_connect_timeout": 2},
        }
    ]
    return layers


def sentinel_caches(sentinels: str, master: str, db: int = 0) -> dict:
    caches = redis_caches(f"sentinel://{sentinels}/{master}/{db}")
    caches["default"]["OPTIONS"]["pool_class"] = "presence_site.sentinel.SentinelCachePool"
    return caches


MEMORY_CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels.layers.InMemoryChannelLayer",
        "CONFIG": {"capacity": CHANNEL_CAPACITY, "group_expiry": CHANNEL_GROUP_EXPIRY},
    }
}
MEMORY_CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Sentinel, when named, takes precedence over REDIS_URL.
REDIS_SENTINELS = env_str("REDIS_SENTINELS")
REDIS_SENTINEL_MASTER = env_str("REDIS_SENTINEL_MASTER")
if REDIS_SENTINELS and not REDIS_SENTINEL_MASTER:
    raise ImproperlyConfigured("REDIS_SENTINELS needs REDIS_SENTINEL_MASTER: the name the sentinels monitor.")
if REDIS_SENTINELS:
    CHANNEL_LAYERS = sentinel_channel_layers(REDIS_SENTINELS, REDIS_SENTINEL_MASTER)
    CACHES = sentinel_caches(REDIS_SENTINELS, REDIS_SENTINEL_MASTER)
elif REDIS_URL:
    CHANNEL_LAYERS = redis_channel_layers(REDIS_URL)
    CACHES = redis_caches(REDIS_URL)
else:
    CHANNEL_LAYERS = MEMORY_CHANNEL_LAYERS
    CACHES = MEMORY_CACHES

# Sessions live in the database so that every process on every host sees them.
SESSION_ENGINE = "django.contrib.sessions.backends.db"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Brute-force log-in throttling (django-axes). A lockout is for one user name
# at one address: an attacker cannot lock a user out from elsewhere, nor lock
# out everyone behind a shared address (an office, a NAT) by guessing.
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_float("AXES_COOLOFF_MINUTES", 15.0))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "accounts/locked_out.html"
AXES_HTTP_RESPONSE_CODE = 429
AXES_HANDLER = "accounts.backends.RequestOptionalAxesHandler"
# The address is REMOTE_ADDR. The run commands pass Daphne --proxy-headers,
# which takes it from X-Forwarded-For: serve only behind a proxy that sets that
# header, or a client could pick its own address (and its lockout).

# Content-Security-Policy (django-csp): only this site's own scripts, styles,
# images and sockets; no inline script or style, no framing. The middleware
# adds this host's ws:/wss: origin to connect-src (see presence/middleware.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'none'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "manifest-src": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
        "object-src": ["'none'"],
    }
}

# Abuse limits for every WebSocket endpoint (presence/sockets.py). Each socket
# may send SOCKET_FRAME_BURST frames at once and SOCKET_FRAME_RATE per second
# sustained (pings included); frames over that get a rate_limited error, and a
# socket that sends SOCKET_FLOOD_STRIKES of them without pausing is closed 1008.
SOCKET_FRAME_RATE = env_float("SOCKET_FRAME_RATE", 10.0)
SOCKET_FRAME_BURST = env_int("SOCKET_FRAME_BURST", 30)
SOCKET_FLOOD_STRIKES = env_int("SOCKET_FLOOD_STRIKES", 10)
# A room's fan-out on one process may fall this many frames behind (messages
# broadcast from that process and not yet written to its sockets in the room,
# times those sockets) before new messages to the room are refused with
# rate_limited; 0 lifts the bound (realtime/fanout.py).
FANOUT_BACKLOG_LIMIT = env_int("FANOUT_BACKLOG_LIMIT", 5000)
# Open sockets per user across every process; the next one is closed with 4429.
SOCKET_MAX_PER_USER = env_int("SOCKET_MAX_PER_USER", 10)
# How often each process closes (4000) its sockets whose session expired or was
# deleted, or whose user was deactivated without a save (a bulk update).
SOCKET_SESSION_CHECK_INTERVAL = env_float("SOCKET_SESSION_CHECK_INTERVAL", 60.0)

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "presence:index"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env_str("STATIC_ROOT") or BASE_DIR / "staticfiles"
# With DEBUG the files are served straight from static/; in production from
# STATIC_ROOT after `collectstatic`, with hashed names and compression.
WHITENOISE_USE_FINDERS = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# Presence timings, in seconds. A connection whose process stops refreshing it
# is dropped after PRESENCE_TTL; each process refreshes its own connections and
# sweeps stale ones every PRESENCE_HEARTBEAT_INTERVAL.
PRESENCE_TTL = env_float("PRESENCE_TTL", 60.0)
PRESENCE_HEARTBEAT_INTERVAL = env_float("PRESENCE_HEARTBEAT_INTERVAL", 15.0)
# On SIGTERM a process closes its sockets with 1012 spread over this many
# seconds, lets what it holds go out, and exits 0 (docs/protocol.md).
SHUTDOWN_DRAIN = env_float("SHUTDOWN_DRAIN", 5.0)
# How often each process asks the channel layer's Redis who it is: two checks
# without an answer, or a new run id (a restart), close the process's sockets
# with 4503 so that clients resync. Beats with the heartbeat unless set.
SOCKET_LAYER_CHECK_INTERVAL = env_float("SOCKET_LAYER_CHECK_INTERVAL", PRESENCE_HEARTBEAT_INTERVAL)
# How long the last socket may be gone before the leave is announced, so that
# a page reload does not flicker offline and back.
PRESENCE_LEAVE_GRACE = env_float("PRESENCE_LEAVE_GRACE", 1.5)
# Presence diffs are coalesced over this window so that a login storm costs a
# watcher a few frames, not one per login.
PRESENCE_COALESCE_WINDOW = env_float("PRESENCE_COALESCE_WINDOW", 0.25)
# Whether users may turn invisible (shown offline to everyone else); with 0 a status.set asking for it is forbidden.
PRESENCE_ALLOW_INVISIBLE = env_bool("PRESENCE_ALLOW_INVISIBLE", True)
# How many recently seen offline users the presence page lists.
PRESENCE_RECENT_LIMIT = env_int("PRESENCE_RECENT_LIMIT", 20)
# A tab untouched (or hidden) this long reports itself idle; a user whose tabs
# are all idle is shown as away.
PRESENCE_IDLE_AFTER = env_float("PRESENCE_IDLE_AFTER", 300.0)

# /metrics answers staff sessions and these networks (behind a proxy, Daphne's
# --proxy-headers makes REMOTE_ADDR the client's address).
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS", ["127.0.0.0/8", "::1/128"])

# Chat: each user may send a burst of CHAT_RATE_BURST messages, then
# CHAT_RATE_PER_MINUTE a minute, across all their sockets and processes; a
# socket that keeps sending past rate_limited this many times is closed (1008).
CHAT_RATE_BURST = env_int("CHAT_RATE_BURST", 10)
CHAT_RATE_PER_MINUTE = env_float("CHAT_RATE_PER_MINUTE", 100.0)
CHAT_FLOOD_CLOSE_AFTER = env_int("CHAT_FLOOD_CLOSE_AFTER", 20)
# A socket's typing notices are relayed at most once per this many seconds.
CHAT_TYPING_INTERVAL = env_float("CHAT_TYPING_INTERVAL", 2.0)
# room.presence goes out at most once per room per window from each process, so
# that a crowd joining a room does not cost a whole list per join; 0 sends one per change.
CHAT_PRESENCE_WINDOW = env_float("CHAT_PRESENCE_WINDOW", 0.25)
# room.activity (members' counts when their rooms get messages) goes out at
# most once per room per window from each process, off the sender's path.
CHAT_ACTIVITY_WINDOW = env_float("CHAT_ACTIVITY_WINDOW", 0.25)
# How long a deleted message is remembered for clients that resume after it
# (?after=<id>); one away for longer shows it until the page is loaded again.
# It is also how long a room's change log (edits, deletions, reactions) is kept
# for ?cursor=<c>: a cursor older than that is answered with a reset.
CHAT_DELETED_KEEP = env_float("CHAT_DELETED_KEEP", 7 * 24 * 3600)
# How long after sending (seconds) the author may edit a message (Zulip's default).
CHAT_EDIT_WINDOW = env_float("CHAT_EDIT_WINDOW", 600)

# The admin's activity dashboard keeps its minute samples and daily roll-ups
# this many days. Every HOUSEKEEPING_INTERVAL seconds one process of the
# deployment (whichever holds the lease) clears ended sessions, rolls up the
# closed days and prunes what is older.
ACTIVITY_KEEP_DAYS = env_int("ACTIVITY_KEEP_DAYS", 30)
HOUSEKEEPING_INTERVAL = env_float("HOUSEKEEPING_INTERVAL", 3600.0)

# Daphne's "Exception inside application" tracebacks go through loggers that
# Django's default configuration would silence.
LOG_FORMAT = env_str("LOG_FORMAT", "plain")
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json; got {LOG_FORMAT!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "presence_site.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT},
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # django-axes logs every log-in at INFO; failures and lockouts are
        # logged by accounts.security with the reason, user name and address.
        "axes": {"level": "WARNING"},
    },
}

if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    SECURE_REFERRER_POLICY = "same-origin"
    X_FRAME_OPTIONS = "DENY"
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
