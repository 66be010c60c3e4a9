"""Redis Sentinel for Django's cache: a connection pool that finds the master through Sentinel.

channels-redis takes Sentinel natively (`sentinels` and `master_name` in a
host entry); Django's RedisCache builds pools with `pool_class.from_url()`, so
its LOCATION is `sentinel://host:port,host:port/<master name>/<db>` and this
class turns that into redis-py's SentinelConnectionPool.
"""

from urllib.parse import urlsplit

from redis.sentinel import Sentinel, SentinelConnectionPool


def parse_sentinels(value: str) -> list[tuple[str, int]]:
    """'h1:26379,h2:26379' → [('h1', 26379), ('h2', 26379)]."""
    hosts = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        host, _, port = item.rpartition(":")
        hosts.append((host.strip("[]") or "127.0.0.1", int(port or 26379)))
    return hosts


class SentinelCachePool(SentinelConnectionPool):
    @classmethod
    def from_url(cls, url: str, **options) -> "SentinelCachePool":
        parts = urlsplit(url)
        master, _, db = parts.path.strip("/").partition("/")
        sentinel_options = {key: options[key] for key in ("socket_timeout", "socket_connect_timeout") if key in options}
        manager = Sentinel(parse_sentinels(parts.netloc), sentinel_kwargs=sentinel_options)
        return cls(master, manager, db=int(db or 0), **options)
