"""A per-user message rate limit shared by every process, through Django's cache.

The limit is a token bucket kept as one timestamp (the generic cell rate
algorithm): a burst of CHAT_RATE_BURST messages, then one every
60 / CHAT_RATE_PER_MINUTE seconds. On Redis the check-and-update runs as one
Lua script against Redis's clock, so processes on different hosts neither race
nor disagree about the time; on the local-memory cache (one process) a lock
makes it atomic.
"""

import math
import threading
import time

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache

_GCRA = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
if tat - now > tolerance then
  return tostring(tat - now - tolerance)
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return '0'
"""

# The local-memory cache lives in this process only, so a process lock is enough.
_local_lock = threading.Lock()


def _limits() -> tuple[float, float]:
    interval = 60.0 / settings.CHAT_RATE_PER_MINUTE
    return interval, interval * (settings.CHAT_RATE_BURST - 1)


def _key(user_id: int) -> str:
    return f"chat:rate:{user_id}"


def rate_take(*, user_id: int) -> float:
    """Take one message from a user's allowance: 0 when allowed, else seconds until the next one is."""
    interval, tolerance = _limits()
    cache = caches["default"]
    if isinstance(cache, RedisCache):
        return _take_redis(cache, _key(user_id), interval, tolerance)
    return _take_local(cache, _key(user_id), interval, tolerance)


def _take_redis(cache: RedisCache, key: str, interval: float, tolerance: float) -> float:
    full_key = cache.make_and_validate_key(key)
    client = cache._cache.get_client(full_key, write=True)
    wait = client.register_script(_GCRA)(keys=[full_key], args=[repr(interval), repr(tolerance)])
    return float(wait)


def _take_local(cache, key: str, interval: float, tolerance: float) -> float:
    # Correct for the local-memory cache (one process); other non-Redis
    # backends get a best-effort limit per process.
    with _local_lock:
        now = time.time()
        tat = max(cache.get(key, now), now)
        if tat - now > tolerance:
            return tat - now - tolerance
        new_tat = tat + interval
        cache.set(key, new_tat, timeout=math.ceil(new_tat - now) + 1)
        return 0.0
