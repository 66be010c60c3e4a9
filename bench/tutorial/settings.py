"""Settings for the tutorial-style baseline: the least a Channels chat room needs.

It shares the bench database (users and sessions) with the app, so the same
session cookies log in on both.
"""

import os

SECRET_KEY = os.environ["SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "daphne",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "channels",
]
ASGI_APPLICATION = "bench.tutorial.asgi.application"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["SQLITE_PATH"]}}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
SESSION_ENGINE = "django.contrib.sessions.backends.db"

# The tutorial's layer, with the two fixes it cannot run without here (see
# DESIGN.md's traps): a socket timeout above the layer's 5 s blocking read, and
# a pool large enough for a burst of handshakes.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": os.environ.get("TUTORIAL_LAYER", "channels_redis.core.RedisChannelLayer"),
        "CONFIG": {"hosts": [{"address": os.environ["REDIS_URL"], "socket_timeout": 10, "max_connections": 2000}]},
    }
}
