"""Prometheus metrics of one process, exposed at /metrics.

Counters and the socket gauge are per process (scrape every process); the
online-user count is read from the database at scrape time, so every process
reports the same truth.
"""

from prometheus_client import Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

OPEN_SOCKETS = Gauge("presence_open_sockets", "WebSockets open on this process.", ["endpoint"])
FRAMES_REFUSED = Counter("presence_frames_refused_total", "Client frames refused, by reason.", ["reason"])
SOCKETS_CLOSED = Counter(
    "presence_sockets_closed_total", "WebSockets closed, by endpoint and close code.", ["endpoint", "code"]
)
LAYER_ERRORS = Counter("presence_channel_layer_errors_total", "Channel-layer operations that failed.", ["operation"])
SWEEP_RUNS = Counter("presence_sweep_runs_total", "Presence sweeps run by this process.")
STALE_REMOVED = Counter("presence_stale_connections_removed_total", "Connections of dead processes removed by sweeps.")
MESSAGES_STORED = Counter("chat_messages_stored_total", "Chat messages stored.")
MESSAGES_BROADCAST = Counter("chat_messages_broadcast_total", "Chat messages handed to the channel layer for a room.")


class OnlineUsersCollector(Collector):
    """presence_online_users, counted in the database when scraped."""

    def collect(self):
        from presence.selectors import presence_online_count

        family = GaugeMetricFamily("presence_online_users", "Users with at least one live socket on any process.")
        try:
            family.add_metric([], presence_online_count())
        except Exception:  # the database is down: report nothing rather than fail the scrape
            return
        yield family


REGISTRY.register(OnlineUsersCollector())
