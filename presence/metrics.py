"""Prometheus metrics of presence, exposed at /metrics.

Counters are per process (scrape every process); the online-user count is
read from the database at scrape time, so every process reports the same truth.
"""

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

SWEEP_RUNS = Counter("presence_sweep_runs_total", "Presence sweeps run by this process.")
STALE_REMOVED = Counter("presence_stale_connections_removed_total", "Connections of dead processes removed by sweeps.")


class OnlineUsersCollector(Collector):
    """presence_online_users, counted in the database when scraped."""

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("presence_online_users", "Users with at least one live socket on any process.")

    def describe(self):
        # Without describe(), registering calls collect(): a query while the apps load.
        yield self._family()

    def collect(self):
        from presence.selectors import presence_online_count

        family = self._family()
        try:
            family.add_metric([], presence_online_count())
        except Exception:  # the database is down: report nothing rather than fail the scrape
            return
        yield family


REGISTRY.register(OnlineUsersCollector())
